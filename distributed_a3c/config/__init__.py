"""The job's configuration: typed dataclasses for every group of `conf/` and the rules between values.

- `schema.py`: `Config` and one dataclass per group (`EnvConfig`, `ModelConfig`, `OptimConfig`, ...);
  their defaults are the default job's.
- `rules.py`: `validate` / `config_errors` (every broken rule at once, one line each, `ConfigError`).
- `choices.py`: the names a value may take (`MODES`, `EXPERIENCE_MODES`, `OBJECTIVES`, ...).
- `unused.py`: `unused_options`, the options the chosen mode ignores.

No Hydra here (train.py registers the schema); the rules that need gymnasium are in `envs/checks.py`.
"""

from distributed_a3c.config.choices import EXPERIENCE_MODES, MODES, OBJECTIVES
from distributed_a3c.config.rules import ConfigError, config_errors, validate
from distributed_a3c.config.schema import (
    AlgoConfig,
    AtariConfig,
    CentralConfig,
    Config,
    EnvConfig,
    EvalConfig,
    LoggerConfig,
    ModelConfig,
    OptimConfig,
    RpcConfig,
    ScaleConfig,
    ServerConfig,
    TrainConfig,
    WandbConfig,
    WorkerConfig,
)
from distributed_a3c.config.unused import unused_options

__all__ = [
    "EXPERIENCE_MODES",
    "MODES",
    "OBJECTIVES",
    "AlgoConfig",
    "AtariConfig",
    "CentralConfig",
    "Config",
    "ConfigError",
    "EnvConfig",
    "EvalConfig",
    "LoggerConfig",
    "ModelConfig",
    "OptimConfig",
    "RpcConfig",
    "ScaleConfig",
    "ServerConfig",
    "TrainConfig",
    "WandbConfig",
    "WorkerConfig",
    "config_errors",
    "unused_options",
    "validate",
]
