"""The environments a worker steps: gymnasium vector envs with episode statistics, Atari, the checks.

- `vector.py`: `make_vector_env` (a worker's batch of envs: sync, async or the env's own batched
  implementation), `make_env_fn` (one env), and what a worker reads from a vector step
  (`finished_episodes`, `episode_ends`, `final_observations`, `is_next_step_autoreset`).
- `atari.py`: `ALE/...` ids with DeepMind's preprocessing (the gymnasium backend).
- `native.py`: the C++ Atari backends (`env.backend=ale_vector`, `envpool`) under the same contract.
- `checks.py`: the config rules that need gymnasium (`validate_all`, `all_errors`): the id exists, its
  optional packages are installed.
"""

from distributed_a3c.envs.checks import all_errors, validate_all
from distributed_a3c.envs.vector import (
    episode_ends,
    final_observations,
    finished_episodes,
    is_next_step_autoreset,
    make_env_fn,
    make_vector_env,
)

__all__ = [
    "all_errors",
    "episode_ends",
    "final_observations",
    "finished_episodes",
    "is_next_step_autoreset",
    "make_env_fn",
    "make_vector_env",
    "validate_all",
]
