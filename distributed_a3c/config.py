"""Typed configuration for every group in `conf/`.

Plain dataclasses: Hydra registers them as schemas in `train.py` (so a typo'd key or a wrongly typed
value fails at composition), and `validate` checks the rules between values, reporting every broken
rule at once. Nothing here imports Hydra or torch.distributed.
"""

from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """One or more configuration values break a rule; the message lists each of them."""


@dataclass
class EnvConfig:
    id: str = "CartPole-v1"
    """Gymnasium environment id, e.g. CartPole-v1, ALE/Pong-v5."""
    vectorization: str = "sync"
    """How a worker batches its envs: `sync` (one process, fastest for cheap envs) or `async` (subprocesses)."""
    max_episode_steps: int | None = None
    """Override the env's time limit; null keeps the registered one."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for `gymnasium.make`."""


@dataclass
class ModelConfig:
    name: str = "mlp"
    """Actor-critic architecture: `mlp`."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """Widths of the hidden layers of the MLP torso."""
    activation: str = "tanh"
    """Hidden activation: tanh or relu."""
    shared_torso: bool = False
    """True: actor and critic share the hidden layers; False: two separate MLPs."""


@dataclass
class OptimConfig:
    name: str = "adam"
    """Server optimizer: adam or rmsprop (one set of statistics shared by all workers, as in A3C)."""
    lr: float = 1e-3
    """Learning rate."""
    eps: float = 1e-5
    """Denominator epsilon of Adam / RMSprop."""
    alpha: float = 0.99
    """RMSprop smoothing constant."""
    beta1: float = 0.9
    """Adam first-moment decay."""
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
    entropy_coef: float = 0.01
    """Weight of the entropy bonus (subtracted from the loss)."""
    max_grad_norm: float = 0.5
    """Clip each worker gradient to this global L2 norm; 0 disables clipping."""
    normalize_advantages: bool = False
    """Standardize advantages within each rollout."""


@dataclass
class WorkerConfig:
    envs_per_worker: int = 8
    """Environments stepped together by each worker."""
    rollout_len: int = 5
    """Steps per env in one n-step rollout (one gradient push per rollout)."""
    torch_threads: int = 1
    """Intra-op threads per CPU worker; one beats two when workers share cores."""
    overlap: bool = False
    """Collect the next rollout while the previous push is in flight (adds one version of staleness)."""


@dataclass
class ServerConfig:
    accumulate: int = 1
    """Sum this many pushes into one optimizer step (Lapan's GRAD_BATCH); 1 applies each push as it arrives."""
    max_staleness: int = 100
    """Drop pushes computed on weights more than this many versions old (counted as dropped)."""
    device: str = "cpu"
    """Where the master weights and optimizer live: cpu, cuda, or auto (cuda when available)."""
    wire_dtype: str = "float32"
    """Dtype of gradients and weights on the wire: float32, bfloat16 or float16 (half the bytes; the
    master weights and optimizer stay float32)."""


@dataclass
class RpcConfig:
    port: int | None = None
    """Null: RPC rendezvous reuses torchrun's store (no extra port). An int: a TCP store on MASTER_ADDR:port."""
    socket_ifname: str | None = None
    """Network interface for TensorPipe (TP_SOCKET_IFNAME); null picks the one that routes to MASTER_ADDR."""
    timeout_s: float = 60.0
    """Timeout of one RPC call."""
    num_threads: int = 8
    """RPC worker threads on each rank."""


@dataclass
class TrainConfig:
    total_env_steps: int = 2_000_000
    """Stop after this many env steps summed over all workers."""
    target_return: float | None = 475.0
    """Stop once the mean return of the last 100 episodes reaches this; null disables."""
    max_minutes: float | None = 30.0
    """Stop after this much wall time; null disables."""
    log_interval_s: float = 1.0
    """Seconds between metric rows (console, metrics.jsonl, W&B)."""
    checkpoint_interval_s: float = 60.0
    """Seconds between checkpoints; a final one is always written."""
    resume: str | None = None
    """Path of a checkpoint to continue from (weights, optimizer, counters)."""


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
    workers: int = 2
    """Worker processes of a local launch (`a3c-train` outside torchrun); the server is one more process."""
    seed: int = 1
    """Base seed; each worker seeds its envs with seed + 1000 * rank + env index."""
    name: str = "a3c"
    """Run name, used for W&B and the summary line."""


MODELS = ("mlp",)
OPTIMIZERS = ("adam", "rmsprop")
VECTORIZATIONS = ("sync", "async")
ACTIVATIONS = ("tanh", "relu")
WANDB_MODES = ("offline", "online", "disabled")
SERVER_DEVICES = ("cpu", "cuda", "auto")
WIRE_DTYPE_NAMES = ("float32", "bfloat16", "float16")


def _check(errors: list[str], ok: bool, key: str, value: object, allowed: str) -> None:
    if not ok:
        errors.append(f"{key}={value!r} is invalid: must be {allowed}")


def _choice(errors: list[str], key: str, value: str, allowed: tuple[str, ...]) -> None:
    _check(errors, value in allowed, key, value, "one of " + ", ".join(allowed))


def config_errors(cfg: Config) -> list[str]:
    """Every broken rule in `cfg`, one line each (empty when the config is valid)."""
    e: list[str] = []
    _choice(e, "env.vectorization", cfg.env.vectorization, VECTORIZATIONS)
    _check(
        e,
        cfg.env.max_episode_steps is None or cfg.env.max_episode_steps >= 1,
        "env.max_episode_steps",
        cfg.env.max_episode_steps,
        "null or >= 1",
    )
    _choice(e, "model.name", cfg.model.name, MODELS)
    _choice(e, "model.activation", cfg.model.activation, ACTIVATIONS)
    _check(
        e,
        len(cfg.model.hidden_sizes) >= 1 and all(h >= 1 for h in cfg.model.hidden_sizes),
        "model.hidden_sizes",
        list(cfg.model.hidden_sizes),
        "a non-empty list of sizes >= 1",
    )
    _choice(e, "optim.name", cfg.optim.name, OPTIMIZERS)
    _check(e, cfg.optim.lr > 0, "optim.lr", cfg.optim.lr, "> 0")
    _check(e, cfg.optim.eps > 0, "optim.eps", cfg.optim.eps, "> 0")
    _check(e, 0 <= cfg.optim.alpha < 1, "optim.alpha", cfg.optim.alpha, "in [0, 1)")
    _check(e, 0 <= cfg.optim.beta1 < 1, "optim.beta1", cfg.optim.beta1, "in [0, 1)")
    _check(e, 0 <= cfg.optim.beta2 < 1, "optim.beta2", cfg.optim.beta2, "in [0, 1)")
    _check(e, 0 < cfg.algo.gamma <= 1, "algo.gamma", cfg.algo.gamma, "in (0, 1]")
    _check(e, 0 <= cfg.algo.gae_lambda <= 1, "algo.gae_lambda", cfg.algo.gae_lambda, "in [0, 1]")
    _check(e, cfg.algo.value_coef >= 0, "algo.value_coef", cfg.algo.value_coef, ">= 0")
    _check(e, cfg.algo.entropy_coef >= 0, "algo.entropy_coef", cfg.algo.entropy_coef, ">= 0")
    _check(e, cfg.algo.max_grad_norm >= 0, "algo.max_grad_norm", cfg.algo.max_grad_norm, ">= 0 (0 disables)")
    _check(e, cfg.worker.envs_per_worker >= 1, "worker.envs_per_worker", cfg.worker.envs_per_worker, ">= 1")
    _check(e, cfg.worker.rollout_len >= 1, "worker.rollout_len", cfg.worker.rollout_len, ">= 1")
    _check(e, cfg.worker.torch_threads >= 1, "worker.torch_threads", cfg.worker.torch_threads, ">= 1")
    _check(e, cfg.server.accumulate >= 1, "server.accumulate", cfg.server.accumulate, ">= 1")
    _check(e, cfg.server.max_staleness >= 0, "server.max_staleness", cfg.server.max_staleness, ">= 0")
    _choice(e, "server.device", cfg.server.device, SERVER_DEVICES)
    _choice(e, "server.wire_dtype", cfg.server.wire_dtype, WIRE_DTYPE_NAMES)
    _check(
        e,
        cfg.rpc.port is None or 1 <= cfg.rpc.port <= 65535,
        "rpc.port",
        cfg.rpc.port,
        "null or a TCP port in 1..65535",
    )
    _check(e, cfg.rpc.timeout_s > 0, "rpc.timeout_s", cfg.rpc.timeout_s, "> 0")
    _check(e, cfg.rpc.num_threads >= 1, "rpc.num_threads", cfg.rpc.num_threads, ">= 1")
    _check(e, cfg.train.total_env_steps >= 1, "train.total_env_steps", cfg.train.total_env_steps, ">= 1")
    _check(
        e,
        cfg.train.max_minutes is None or cfg.train.max_minutes > 0,
        "train.max_minutes",
        cfg.train.max_minutes,
        "null or > 0",
    )
    _check(e, cfg.train.log_interval_s > 0, "train.log_interval_s", cfg.train.log_interval_s, "> 0")
    _check(
        e, cfg.train.checkpoint_interval_s > 0, "train.checkpoint_interval_s", cfg.train.checkpoint_interval_s, "> 0"
    )
    _choice(e, "logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    _check(e, cfg.workers >= 1, "workers", cfg.workers, ">= 1")
    _check(e, cfg.seed >= 0, "seed", cfg.seed, ">= 0")
    env_error = env_id_error(cfg.env.id)
    if env_error:
        e.append(env_error)
    return e


def env_id_error(env_id: str) -> str | None:
    """A one-line message when `env_id` is not a registered gymnasium id, else None."""
    import gymnasium as gym

    _import_env_namespace(env_id)
    if env_id in gym.registry:
        return None
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.pprint_registry()"
    return f"env.id={env_id!r} is invalid: not a registered gymnasium environment ({hint})"


def _import_env_namespace(env_id: str) -> None:
    """Registering ALE ids needs `import ale_py`; other namespaces register on gymnasium import."""
    if env_id.startswith("ALE/"):
        with contextlib.suppress(ImportError):
            import ale_py  # noqa: F401


def validate(cfg: Config) -> Config:
    """Raise ConfigError listing every broken rule; return `cfg` unchanged when it is valid."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg
