"""Typed configuration for every group in `conf/`.

Plain dataclasses: Hydra registers them as schemas in `train.py` (so a typo'd key or a wrongly typed
value fails at composition), and `rules.validate` checks the rules between values, reporting every
broken rule at once. Nothing here imports Hydra or torch.distributed. The defaults are the default job's
(`conf/config.yaml` composed with no overrides): `Config()` is what `a3c-train` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AtariConfig:
    """DeepMind-style preprocessing of `ALE/...` ids (Mnih et al. 2015), the same in every `env.backend`."""

    noop_max: int = 30
    """Up to this many no-op actions on each reset (random number per episode); 0 disables."""
    frame_skip: int = 4
    """Repeat each action this many frames, observing the max over the last two."""
    screen_size: int = 84
    """Side of the square grayscale observation frame."""
    frame_stack: int = 4
    """Frames stacked into one observation (C, H, W), oldest first; zeros before the episode's first frame."""
    terminal_on_life_loss: bool = False
    """Losing a life ends the episode for the loss (the game goes on); metrics still count full games."""
    clip_rewards: bool = True
    """Train on sign(reward); metrics always report the raw game score."""
    fire_reset: bool = True
    """Press FIRE once after each game reset in games that have it (Breakout needs it to start)."""
    repeat_action_probability: float = 0.0
    """Sticky actions; 0 as in DeepMind's setup, 0.25 as in the v5 default (Machado et al. 2018)."""
    num_threads: int = 0
    """Threads of the ale_vector / envpool backends; 0 lets the backend choose."""


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    """Gymnasium environment id, e.g. CartPole-v1, ALE/Pong-v5."""
    backend: str = "gymnasium"
    """Who steps the envs: `gymnasium` (python wrappers in a vector env, any id), or for ALE ids only
    `ale_vector` (ale_py's threaded C++ vector env) or `envpool`. All give the same observations and infos."""
    vectorization: str = "auto"
    """How a worker batches its envs: `sync` (python loop in one process), `async` (subprocesses),
    `vector` (the env's own batched implementation, e.g. CartPole's numpy one: several times faster), or
    `auto` (vector where the env has one, else sync)."""
    max_episode_steps: int | None = None
    """Override the env's time limit; null keeps the registered one."""
    normalize_obs: bool = False
    """Normalize observations with running mean/var shared by all workers (merged on the server, shipped
    with the weights), clipped to +-10; for flat Box observations."""
    scale_rewards: bool = False
    """Divide rewards by the running std of the discounted return (per worker, as VecNormalize); metrics
    still report the raw return."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `gymnasium.make`."""
    atari: AtariConfig = field(default_factory=AtariConfig)
    """Atari preprocessing, used for `ALE/...` ids only."""


@dataclass
class ModelConfig:
    name: str = "mlp"
    """Actor-critic architecture: `mlp`, `lstm` (MLP encoder -> LSTM cell, A3C's recurrent agent), or `cnn`
    (Nature CNN, for image observations such as Atari)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Widths of the hidden layers of the MLP torso."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    shared_torso: bool = False
    """True: actor and critic share the hidden layers; False: two separate MLPs."""
    conv: str = "nature"
    """Conv layers of model=cnn: `nature` (32-64-64 filters, Mnih et al. 2015) or `a3c` (16-32 filters, the
    A3C paper's smaller torso, ~4x cheaper on CPU)."""
    lstm_size: int = 128
    """Hidden units of the LSTM cell of model=lstm (MLP encoder of `hidden_sizes` -> LSTM -> heads)."""


@dataclass
class OptimConfig:
    name: str = "adam"
    """Server optimizer: adam or rmsprop (one set of statistics shared by all workers, as in A3C)."""
    lr: float = 4e-3
    """Learning rate (the CartPole preset's; `optim/*.yaml` and env presets set their own)."""
    eps: float = 1e-5
    """Denominator epsilon of Adam / RMSprop."""
    alpha: float = 0.99
    """RMSprop smoothing constant."""
    beta1: float = 0.0
    """Adam first-moment decay (momentum): the CartPole preset's 0.0; `optim/adam.yaml` sets Adam's usual 0.9.
    Asynchronous pushes already act as momentum; adding Adam's caused CartPole's slow seeds
    (docs/BENCHMARKS.md, "Where the tail comes from")."""
    beta2: float = 0.999
    """Adam second-moment decay."""


@dataclass
class AlgoConfig:
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    gae_lambda: float = 1.0
    """GAE lambda in [0, 1]; 1.0 gives plain n-step returns as in the A3C paper."""
    value_coef: float = 0.5
    """Weight of the value loss."""
    entropy_coef: float = 0.0
    """Weight of the entropy bonus (subtracted from the loss)."""
    max_grad_norm: float = 0.5
    """Clip each worker gradient to this global L2 norm; 0 disables clipping."""
    normalize_advantages: bool = False
    """Standardize advantages within each rollout."""
    vtrace: bool = True
    """mode=data and mode=central: learn from each rollout with V-trace (IMPALA, Espeholt et al. 2018; rho and
    c clipped at 1, gae_lambda not used): the server's weights are newer than those that acted, and V-trace
    weighs each step by how much likelier the learner's policy makes its action. grad and sync learn on the
    acting weights. On by default since the CartPole preset's 640-step pushes at lr 4e-3: without it
    mode=data and mode=central runs collapsed now and then (docs/BENCHMARKS.md); the GAE presets (lambda < 1)
    turn it off."""


@dataclass
class WorkerConfig:
    envs_per_worker: int = 32
    """Environments stepped together by each worker."""
    rollout_len: int = 20
    """Steps per env in one n-step rollout (one gradient push per rollout)."""
    torch_threads: int = 1
    """Intra-op threads per CPU worker; one beats two when workers share cores."""
    overlap: bool = False
    """Collect the next rollout while the previous push is in flight (adds one version of staleness)."""

    @property
    def push_env_steps(self) -> int:
        """Env steps in one push: rollout_len steps of each of envs_per_worker envs."""
        return self.rollout_len * self.envs_per_worker


@dataclass
class ServerConfig:
    accumulate: int = 1
    """Sum this many pushes into one optimizer step (Lapan's GRAD_BATCH); 1 applies each push as it arrives;
    0 (auto), in mode=grad: as many pushes as make `scale.reference_batch` env steps when that is set (so
    that more workers with fewer envs each still step on the batch optim.lr was tuned for), else one step
    per `scale.workers_per_step` workers' pushes (1 with fewer workers); 1 with server.fold and in the other
    modes. Measured: docs/BENCHMARKS.md, "Sample scaling" and "Pong with 8 workers"."""
    fold: bool = False
    """Sum the pushes that arrive while an optimizer step runs into the next step (one step for the
    batch instead of one each): more pushes/s when the step is slow (big models, many workers)."""
    max_staleness: int = 100
    """Drop pushes computed on weights more than this many versions old (counted as dropped)."""
    device: str = "cpu"
    """Where the master weights and optimizer live: cpu, cuda, or auto (cuda when available)."""
    wire_dtype: str = "float32"
    """Dtype of gradients and weights on the wire: float32, bfloat16 or float16 (half the bytes; the
    master weights and optimizer stay float32)."""
    shards: int = 1
    """Parameter-server ranks, each owning and optimizing one slice of the flat weights; a worker pushes
    each slice to its owner at once. Where they run: `server.placement`."""
    placement: str = "auto"
    """Which ranks the shards are (server/placement.py): `packed`, ranks 0..shards-1, all on the first node;
    `spread`, the first rank of each of the first `shards` nodes, so that their traffic crosses `shards`
    network links instead of one; `auto`, spread when the job has at least `shards` nodes, else packed."""
    node_aggregate: bool = False
    """mode=grad: the first non-server rank of every node sums the pushes of its node's other ranks and
    forwards one push per window to the server, whose fresh weights it hands back: one upload and one
    download per node instead of one per worker."""
    aggregate_window_ms: float = 50.0
    """server.node_aggregate: a window closes when every living worker of the node has pushed, or this long
    after its first push."""


@dataclass
class ScaleConfig:
    """How the optimizer's step follows the job's size (rl/scaling.py): its learning rate follows the env
    steps each optimizer step learns from, and with many workers grad mode sums pushes into fewer steps."""

    rule: str = "auto"
    """How `optim.lr` follows the env steps of an optimizer step: `sqrt` (Adam's and RMSprop's square-root
    rule), `linear`, `none` (optim.lr whatever the batch), or `auto`: sqrt where every step sums several
    workers' pushes by design (mode=sync, server.node_aggregate), none elsewhere. Measured:
    docs/BENCHMARKS.md, "Sample scaling" (sqrt cut mode=sync's experience to a third at 16 workers and node
    aggregation's to a third; with server.accumulate=0 in mode=grad it did not beat none)."""
    reference_batch: int | None = None
    """Env steps per optimizer step that `optim.lr` is meant for; null: one worker's push
    (worker.rollout_len x worker.envs_per_worker), also when a node aggregator forwards the sum of several."""
    workers_per_step: int = 4
    """server.accumulate=0 (auto), mode=grad, no scale.reference_batch: one optimizer step per this many
    workers' pushes."""
    sync_env_steps: int | None = 2560
    """mode=sync: the env steps a synchronous step learns from, at most about. When every worker's whole push
    would make more, each worker steps fewer envs (down to one, then shorter rollouts), so that more
    workers bring the step sooner instead of making it larger; null: every whole push, growing with the
    workers. Measured: docs/BENCHMARKS.md, "Synchronous steps of a fixed size"."""
    data_env_steps: int | None = 2560
    """mode=data: the same bound for a learner step, which learns from every rollout that queued: all the
    workers' at most. Measured (docs/BENCHMARKS.md, "mode=data: learner steps of a bounded size"): 16 data
    workers reached a return 3x sooner than with whole pushes; 32 were fragile in long runs either way."""
    staleness: str = "none"
    """How a push's learning rate follows its staleness (the optimizer steps taken since its weights):
    `sqrt`, lr x sqrt((ref + 1) / (staleness + 1)) beyond `scale.staleness_reference`; `inverse`, lr x
    (ref + 1) / (staleness + 1) (Zhang et al. 2016); `none`, optim.lr whatever the staleness."""
    staleness_reference: int = 1
    """Staleness that `optim.lr` is meant for (the 2-worker job's); pushes this fresh or fresher get it whole."""


@dataclass
class CentralConfig:
    """mode=central (GA3C): the server's predictor, which acts for every worker."""

    max_batch: int = 0
    """Most observations in one forward pass of the predictor; 0: no limit beyond one request per worker."""
    max_wait_ms: float = 1.0
    """A forward pass waits at most this long after its first request for the other workers' requests (it
    goes at once when every living worker has asked)."""


@dataclass
class RpcConfig:
    port: int | None = None
    """Null: RPC rendezvous reuses torchrun's store (no extra port). An int: a TCP store on MASTER_ADDR:port."""
    socket_ifname: str | None = None
    """Network interface for TensorPipe (TP_SOCKET_IFNAME); null picks the one that routes to MASTER_ADDR."""
    timeout_s: float = 60.0
    """Timeout of one RPC call (a push may legitimately take long: a big model, a loaded server)."""
    liveness_timeout_s: float = 10.0
    """A peer that answers no ping for this long is lost: the lead pings every worker, and every worker its
    server, about once a second. A slow peer (a long env step, a machine under load) still answers pings."""
    num_threads: int = 8
    """RPC worker threads on each rank."""
    transports: list[str] = field(default_factory=lambda: ["uv"])
    """TensorPipe transports, best first: uv (TCP), shm (shared memory), ibv (InfiniBand); must include uv.

    Each pair of ranks uses the first one both can (shm only within one host and network namespace).
    [shm, uv] halves a push's round trip on one host, but every rank's shm reactor busy-polls a core:
    worth it only where cores are spare (docs/BENCHMARKS.md); on 2 cores it gave the default job nothing.
    """
    channels: list[str] | None = None
    """TensorPipe channels for tensor payloads, best first: basic (over the transport), cma (cross-memory
    attach between processes of one kernel), mpt_uv (several TCP connections), xth (threads of one process);
    must include basic. null: TensorPipe's own choice (cma between ranks of one host). [basic] sends every
    byte through the network stack: network namespaces on one machine share a kernel, so without it their
    tensors skip the simulated links (scripts/bench_cluster.py sets it)."""


@dataclass
class TrainConfig:
    total_env_steps: int = 1_000_000
    """Stop after this many env steps summed over all workers."""
    target_return: float | None = 475.0
    """Stop once the mean return reaches this (`train.target_source` says which mean); null disables."""
    target_source: str = "train"
    """Which mean `train.target_return` is compared with: `train`, the last 100 finished training episodes;
    `eval`, the latest evaluation of the current weights (needs `eval.interval_env_steps` > 0)."""
    objective: str = "mean_return_100"
    """What a run returns to a Hydra sweeper and writes in summary.json: `mean_return_100` or
    `eval_mean_return` (maximize), `env_steps_to_target` or `time_to_target` (minimize; +inf when the
    target was never reached). docs/SWEEPS.md."""
    max_minutes: float | None = 10.0
    """Stop after this many minutes of training; null disables. A resumed run counts the minutes of the
    checkpoint it continues from (restarts do not reset the budget)."""
    log_interval_s: float = 1.0
    """Seconds between metric rows (console, metrics.jsonl, W&B)."""
    checkpoint_interval_s: float = 60.0
    """Seconds between checkpoints; a final one is always written."""
    resume: str | None = None
    """Path of a checkpoint to continue from (weights, optimizer, counters). A checkpoint already in the
    run directory (a restarted or requeued job) takes precedence: it is newer."""
    auto_resume: bool = True
    """Continue from the run directory's latest readable checkpoint when there is one: what a restart
    (torchrun --max-restarts, train.max_restarts, an elastic membership change, a requeued job) needs."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the run directory: checkpoint.pt and the K-1 before it (checkpoint.1.pt, ...);
    an unreadable latest one falls back to the one before."""
    max_restarts: int = 0
    """`a3c-train` outside torchrun: restart every rank this many times after a rank fails, resuming
    from the latest checkpoint (under torchrun, its --max-restarts does this)."""


@dataclass
class EvalConfig:
    """Evaluation during training: the lead plays whole episodes with the current weights on envs of its
    own, seeded apart from the training envs, and logs `eval/*` against the env step of those weights."""

    interval_env_steps: int = 0
    """Evaluate every this many env steps (summed over all workers); 0 disables evaluation."""
    episodes: int = 10
    """Episodes per evaluation, one per env, played side by side in one vector env."""
    greedy: bool = False
    """Act greedily (argmax, or the Gaussian mean) instead of sampling from the policy as training does."""
    max_pending: int = 4
    """Weights taken at each interval wait in a queue while an evaluation plays, so evaluations keep to the
    interval's grid when they are slower than training (many workers on few cores); a snapshot due while
    this many wait is skipped (`eval.skipped` in summary.json)."""
    max_episode_steps: int | None = None
    """Time limit of the evaluation episodes; null: the training envs' (`env.max_episode_steps`, else the
    env's registered one). With `env.max_episode_steps` shorter, training episodes are cut (and bootstrapped
    as time limits) while the policy is judged on whole ones."""


@dataclass
class WandbConfig:
    mode: str = "offline"
    """offline (default, no login), online, or disabled."""
    project: str = "distributed_a3c"
    """W&B project name."""
    entity: str | None = None
    """W&B entity (team or user); null uses the default."""
    group: str | None = None
    """W&B group, e.g. to compare seeds."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True
    """Live progress bar on the console of rank 0."""
    tensorboard: bool = False
    """Also write TensorBoard event files (`tensorboard --logdir RUN_DIR`), the same metric names; needs
    the tensorboard extra."""


@dataclass
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    central: CentralConfig = field(default_factory=CentralConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    mode: str = "grad"
    """How workers and server share the work (docs/MODES.md):
    `grad` (A3C, gradient-parallel): each worker's gradient is applied as it arrives;
    `data` (data-parallel): workers send rollouts, the server computes the gradient of those that arrived
    together in one batch;
    `sync` (synchronous A2C, PAAC): the gradients of every living worker for one weight version are
    averaged into one step; each worker waits for it, so nothing is stale;
    `central` (GA3C): workers hold no model; the server's predictor batches their observations into one
    forward pass and its learner learns from their rollouts as in `data`."""
    workers: int = 2
    """Worker processes of a local launch (`a3c-train` outside torchrun); the server is one more process."""
    seed: int = 1
    """Base seed; each worker seeds its envs with seed + 1000 * rank + env index."""
    name: str = "a3c"
    """Run name, used for W&B and the summary line."""
