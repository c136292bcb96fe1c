"""The default job's recipe without asynchrony: `trainer.run_serial` (server + 2 workers in one process,
round-robin, deterministic for a seed) to mean-100 >= 475, seeds 1-10. One line per seed.

    .venv/bin/python scripts/bench_seeds_serial.py                          # the default recipe
    .venv/bin/python scripts/bench_seeds_serial.py algo.entropy_coef=0.01   # Hydra overrides
    SEEDS="1 9" .venv/bin/python scripts/bench_seeds_serial.py              # some seeds
    ORDER=random .venv/bin/python scripts/bench_seeds_serial.py             # who pushes next: drawn

The same seed gives the same env steps every time, so recipes compare without the run-to-run noise of
the asynchronous job (scripts/bench_seeds.sh). ORDER (round-robin, shuffled, random: trainer.run_serial)
replays the interleavings an asynchronous job can take, deterministically.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from distributed_a3c.train import CONF_DIR  # registers the config schema with Hydra
from distributed_a3c.trainer import run_serial


def main(overrides: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    for seed in [int(s) for s in os.environ.get("SEEDS", "1 2 3 4 5 6 7 8 9 10").split()]:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            dcfg = compose("config", overrides=["logger=quiet", f"seed={seed}", "train.max_minutes=3", *overrides])
        cfg = OmegaConf.to_object(dcfg)
        with tempfile.TemporaryDirectory(prefix="a3c-serial-") as run_dir:
            t0 = time.perf_counter()
            config_dict = OmegaConf.to_container(dcfg, resolve=True)
            summary = run_serial(
                cfg, Path(run_dir), config_dict, workers=2, order=os.environ.get("ORDER", "round-robin")
            )
        elapsed = time.perf_counter() - t0
        print(f"seed={seed} {elapsed:.1f}s {summary['env_steps']} {summary['exit_reason']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
