"""Config rules that need gymnasium: the env id is registered, its optional packages are installed, it has
the batched implementation `env.vectorization=vector` asks for. With config/rules.py's own rules, every broken
rule at once (`all_errors`, `validate_all`)."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util

from distributed_a3c.config import Config, ConfigError, config_errors


def all_errors(cfg: Config) -> list[str]:
    """Every broken rule in `cfg`, the env's availability included, one line each."""
    e = config_errors(cfg)
    env_error = env_id_error(cfg.env.id) or env_dependency_error(cfg.env.id)
    if env_error:
        e.append(env_error)
    elif cfg.env.vectorization == "vector":
        _vector_errors(e, cfg)
    return e


def validate_all(cfg: Config) -> Config:
    """Raise ConfigError listing every broken rule (`all_errors`); return `cfg` when it is valid."""
    errors = all_errors(cfg)
    if errors:
        raise ConfigError("; ".join(errors))
    return cfg


def _vector_errors(e: list[str], cfg: Config) -> None:
    import gymnasium as gym

    if gym.spec(cfg.env.id).vector_entry_point is None:
        e.append(
            f"env.vectorization='vector' is invalid for env.id={cfg.env.id!r}: it has no batched "
            "implementation; use sync or async"
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
