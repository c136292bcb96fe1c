"""The names a configuration value may take, where a rule or a module needs the list."""

from __future__ import annotations

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
RPC_CHANNELS = ("basic", "cma", "mpt_uv", "xth")
MODES = ("grad", "data", "sync", "central")
TARGET_SOURCES = ("train", "eval")
OBJECTIVES = {
    "mean_return_100": "maximize",
    "eval_mean_return": "maximize",
    "env_steps_to_target": "minimize",
    "time_to_target": "minimize",
}
"""`train.objective` -> the direction a sweeper should optimize it in (docs/SWEEPS.md)."""
EXPERIENCE_MODES = ("data", "central")
"""Modes in which the server learns from rollouts (the workers send experience, not gradients)."""
STEP_BOUND_KEYS = {"sync": "sync_env_steps", "data": "data_env_steps"}
"""mode -> the `scale` option that bounds its step holding every worker's push (build.fit_to_workers)."""
