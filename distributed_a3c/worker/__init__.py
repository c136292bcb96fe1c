"""The worker side: collect rollouts with a local copy of the actor-critic, push to a `ParameterStore`.

- `gradient.py`: `Worker` (mode=grad, sync): pull -> n-step rollout -> A2C gradient -> push.
- `experience.py`: `ExperienceWorker` (mode=data, central): pushes the rollout itself; `make_worker`
  picks the worker a mode needs.

Workers never see RPC: tests hand them the in-process server, a distributed run a remote store.
"""

from distributed_a3c.worker.experience import ExperienceWorker, make_worker
from distributed_a3c.worker.gradient import Worker, peak_rss_mb

__all__ = ["ExperienceWorker", "Worker", "make_worker", "peak_rss_mb"]
