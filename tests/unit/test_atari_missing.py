"""Atari without ale-py: the error names the pip extra in one line. Runs whether or not ale-py is installed
(test_atari.py needs it and skips without it)."""

from __future__ import annotations

import sys

import pytest

from distributed_a3c.config import AtariConfig, EnvConfig
from distributed_a3c.envs import make_env_fn, make_vector_env
from distributed_a3c.envs.atari import EXTRA_HINT, AtariDependencyError


def _pong(backend: str) -> EnvConfig:
    return EnvConfig(id="ALE/Pong-v5", backend=backend, atari=AtariConfig(num_threads=1))


def test_missing_ale_py_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ale_py", None)  # `import ale_py` now raises ImportError
    with pytest.raises(AtariDependencyError, match=EXTRA_HINT.replace("[", r"\[").replace("]", r"\]")):
        make_env_fn(_pong("gymnasium"))()
    with pytest.raises(AtariDependencyError, match="distributed_a3c"):
        make_vector_env(_pong("ale_vector"), 2, 0)
