"""Typed configuration for every group in `conf/`.

Plain dataclasses: Hydra registers them as schemas in `train.py` (so a typo'd key or a wrongly typed
value fails at composition), and `validate` checks the rules between values, reporting every broken
rule at once. Nothing here imports Hydra or torch.distributed.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """One or more configuration values break a rule; the message lists each of them."""


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
    vectorization: str = "sync"
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
    """Parameter-server ranks (0..shards-1), each owning and optimizing one slice of the flat weights;
    workers are the ranks after them. A worker pushes each slice to its owner at once."""


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
    transports: list[str] = field(default_factory=lambda: ["uv"])
    """TensorPipe transports, best first: uv (TCP), shm (shared memory), ibv (InfiniBand); must include uv.

    Each pair of ranks uses the first one both can (shm only within one host and network namespace).
    [shm, uv] halves a push's round trip on one host, but every rank's shm reactor busy-polls a core:
    worth it only where cores are spare (docs/BENCHMARKS.md); on 2 cores it gave the default job nothing.
    """


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


MODELS = ("mlp", "cnn", "lstm")
CONVS = ("nature", "a3c")
OPTIMIZERS = ("adam", "rmsprop")
VECTORIZATIONS = ("sync", "async", "vector", "auto")
ENV_BACKENDS = ("gymnasium", "ale_vector", "envpool")
ACTIVATIONS = ("tanh", "relu")
WANDB_MODES = ("offline", "online", "disabled")
SERVER_DEVICES = ("cpu", "cuda", "auto")
WIRE_DTYPE_NAMES = ("float32", "bfloat16", "float16")
RPC_TRANSPORTS = ("shm", "uv", "ibv")


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
    _atari_errors(e, cfg.env)
    _choice(e, "model.name", cfg.model.name, MODELS)
    _choice(e, "model.conv", cfg.model.conv, CONVS)
    _check(
        e,
        cfg.model.name != "cnn" or cfg.model.shared_torso,
        "model.shared_torso",
        cfg.model.shared_torso,
        "true for model=cnn (one conv torso feeds both heads)",
    )
    _check(
        e,
        cfg.model.name == "cnn" or not cfg.env.id.startswith("ALE/"),
        "model.name",
        cfg.model.name,
        "cnn for ALE/... ids (image observations): add model=cnn",
    )
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
    _check(
        e,
        not (cfg.server.fold and cfg.server.accumulate > 1),
        "server.fold",
        cfg.server.fold,
        "false when server.accumulate > 1 (both sum pushes into one step; pick one)",
    )
    _check(e, cfg.server.max_staleness >= 0, "server.max_staleness", cfg.server.max_staleness, ">= 0")
    _check(e, cfg.server.shards >= 1, "server.shards", cfg.server.shards, ">= 1")
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
    _check(
        e,
        "uv" in cfg.rpc.transports
        and len(set(cfg.rpc.transports)) == len(cfg.rpc.transports)
        and set(cfg.rpc.transports) <= set(RPC_TRANSPORTS),
        "rpc.transports",
        list(cfg.rpc.transports),
        "distinct names from " + ", ".join(RPC_TRANSPORTS) + ", best first, including uv (TCP: the one every pair"
        " of ranks can use)",
    )
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
    _check(e, cfg.train.keep_checkpoints >= 1, "train.keep_checkpoints", cfg.train.keep_checkpoints, ">= 1")
    _check(e, cfg.train.max_restarts >= 0, "train.max_restarts", cfg.train.max_restarts, ">= 0")
    _choice(e, "logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
    _check(e, cfg.workers >= 1, "workers", cfg.workers, ">= 1")
    _check(e, cfg.seed >= 0, "seed", cfg.seed, ">= 0")
    _check(e, cfg.model.lstm_size >= 1, "model.lstm_size", cfg.model.lstm_size, ">= 1")
    _check(
        e,
        cfg.model.name != "lstm" or cfg.model.shared_torso,
        "model.shared_torso",
        cfg.model.shared_torso,
        "true for model=lstm (one recurrent torso feeds both heads)",
    )
    env_error = env_id_error(cfg.env.id) or env_dependency_error(cfg.env.id)
    if env_error:
        e.append(env_error)
    elif cfg.env.vectorization == "vector":
        _vector_errors(e, cfg)
    return e


def _vector_errors(e: list[str], cfg: Config) -> None:
    import gymnasium as gym

    if gym.spec(cfg.env.id).vector_entry_point is None:
        e.append(
            f"env.vectorization='vector' is invalid for env.id={cfg.env.id!r}: it has no batched "
            "implementation; use sync or async"
        )


def _atari_errors(e: list[str], env: EnvConfig) -> None:
    _choice(e, "env.backend", env.backend, ENV_BACKENDS)
    _check(
        e,
        env.backend not in ENV_BACKENDS or env.backend == "gymnasium" or env.id.startswith("ALE/"),
        "env.backend",
        env.backend,
        f"gymnasium for env.id={env.id!r} (ale_vector and envpool run ALE/... ids only)",
    )
    a = env.atari
    _check(e, a.noop_max >= 0, "env.atari.noop_max", a.noop_max, ">= 0 (0 disables)")
    _check(e, a.frame_skip >= 1, "env.atari.frame_skip", a.frame_skip, ">= 1")
    _check(e, a.screen_size >= 36, "env.atari.screen_size", a.screen_size, ">= 36 (the CNN's smallest input)")
    _check(e, a.frame_stack >= 1, "env.atari.frame_stack", a.frame_stack, ">= 1")
    _check(
        e,
        0 <= a.repeat_action_probability <= 1,
        "env.atari.repeat_action_probability",
        a.repeat_action_probability,
        "in [0, 1]",
    )
    _check(e, a.num_threads >= 0, "env.atari.num_threads", a.num_threads, ">= 0 (0 lets the backend choose)")
    _check(
        e,
        not (env.normalize_obs and env.id.startswith("ALE/")),
        "env.normalize_obs",
        env.normalize_obs,
        "false for ALE/... ids (uint8 frames; model=cnn scales them by 1/255)",
    )
    _check(
        e,
        not (env.vectorization == "vector" and env.id.startswith("ALE/")),
        "env.vectorization",
        env.vectorization,
        "sync or async for ALE/... ids: env.backend=ale_vector is ale_py's batched env, with env.atari applied",
    )


def env_id_error(env_id: str) -> str | None:
    """A one-line message when `env_id` is not a registered gymnasium id, else None."""
    import gymnasium as gym

    _import_env_namespace(env_id)
    if env_id in gym.registry:
        return None
    if env_id.startswith("ALE/") and importlib.util.find_spec("ale_py") is None:
        return f"env.id={env_id!r} is invalid: Atari needs ale-py: pip install 'distributed_a3c[atari]'"
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "see gymnasium.pprint_registry()"
    return f"env.id={env_id!r} is invalid: not a registered gymnasium environment ({hint})"


ENV_EXTRAS = {
    "gymnasium.envs.box2d": ("Box2D", "box2d", ("Box2D",)),
    "gymnasium.envs.mujoco": ("MuJoCo", "mujoco", ("mujoco", "imageio")),
    "ale_py.env": ("ale-py and OpenCV", "atari", ("ale_py", "cv2")),
}
"""Entry-point module of a gymnasium env family -> (what it needs, the pip extra, modules to import)."""


def env_dependency_error(env_id: str) -> str | None:
    """A one-line message naming the pip extra when `env_id` needs an optional package that is missing."""
    import gymnasium as gym

    spec = gym.registry.get(env_id)
    entry = spec.entry_point if spec is not None else None
    if not isinstance(entry, str):
        return None
    for prefix, (what, extra, modules) in ENV_EXTRAS.items():
        if entry.startswith(prefix):
            for module in modules:
                try:
                    importlib.import_module(module)
                except ImportError:
                    return f"env.id={env_id!r} needs {what}: pip install 'distributed_a3c[{extra}]'"
    return None


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
