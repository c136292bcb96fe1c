"""The parameter-server side: it owns the master weights and the optimizer and applies what workers push.

One module per way of learning, the parts they share beside them:
- `params.py`: `ParameterServer` (mode=grad, A3C): each pushed gradient applied as it arrives.
- `sync.py`: `SynchronousServer` (mode=sync, PAAC): one averaged step per weight version.
- `learner.py`: `ExperienceServer` (mode=data, central): learns from pushed rollouts in batches.
- `predictor.py`: `BatchingPredictor` (mode=central, GA3C): every worker's observations in one pass.
- `sharding.py`: `server.shards`: slice bounds, `ShardedParameterStore`, optimizer-state merge and split.
- `validation.py`: why a push cannot be taken (`ExperienceSpec`, one line per reason).
- `run_stats.py`: the run's statistics under the metric names, and the stop policy (the lead's).
- `roster.py`: `WorkerRoster`, which workers are alive, lost or gone.
- `optim.py`: `FlatOptimizer`, Adam / RMSprop on one flat tensor in torch.optim's formulas and format.

Nothing here imports torch.distributed: `distributed/` puts these behind RPC.
"""

from distributed_a3c.server.learner import ExperienceServer
from distributed_a3c.server.params import ParameterServer
from distributed_a3c.server.predictor import BatchingPredictor
from distributed_a3c.server.roster import WorkerRoster
from distributed_a3c.server.sharding import ShardedParameterStore
from distributed_a3c.server.sync import SynchronousServer
from distributed_a3c.server.validation import ExperienceSpec

__all__ = [
    "BatchingPredictor",
    "ExperienceServer",
    "ExperienceSpec",
    "ParameterServer",
    "ShardedParameterStore",
    "SynchronousServer",
    "WorkerRoster",
]
