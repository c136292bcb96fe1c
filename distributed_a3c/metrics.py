"""Where metric rows go: console progress, `metrics.jsonl`, Weights & Biases. One rank (the server) logs.

Each sink has the same two calls, `log(row)` and `close()`; `row["global_step"]` (env steps summed over
all workers) is the x-axis everywhere.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Protocol

from distributed_a3c.config import LoggerConfig

log = logging.getLogger(__name__)


class MetricSink(Protocol):
    def log(self, row: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonlSink:
    """One JSON object per log interval, flushed at once so a crash loses at most one row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = open(path, "a", buffering=1)  # noqa: SIM115 (held open for the whole run)

    def log(self, row: dict[str, float]) -> None:
        self._f.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")

    def close(self) -> None:
        self._f.close()


class WandbSink:
    """A W&B run, started on a background thread so its ~1 s start-up does not delay training.

    Rows logged before the run is ready are buffered and sent in order.
    """

    def __init__(
        self, cfg: LoggerConfig, run_dir: Path, name: str, config: dict[str, Any], resume_id: str | None = None
    ) -> None:
        self.cfg = cfg.wandb
        self.run_dir = run_dir
        self.run: Any = None
        self.error: str | None = None
        self._pending: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, args=(name, config, resume_id), daemon=True)
        self._thread.start()

    def _start(self, name: str, config: dict[str, Any], resume_id: str | None) -> None:
        try:
            import wandb

            run = wandb.init(
                mode=self.cfg.mode,
                project=self.cfg.project,
                entity=self.cfg.entity,
                group=self.cfg.group,
                tags=list(self.cfg.tags),
                name=name,
                config=config,
                dir=str(self.run_dir),
                id=resume_id,
                resume="allow" if resume_id else None,
                settings=wandb.Settings(silent=True, console="off"),
            )
            run.define_metric("global_step")
            run.define_metric("*", step_metric="global_step")
            (self.run_dir / "wandb_run_id.txt").write_text(run.id)
        except Exception as e:  # a logging backend must never take training down
            self.error = f"{type(e).__name__}: {e}"
            log.warning("W&B disabled for this run: %s", self.error)
            return
        with self._lock:
            self.run = run
            for row in self._pending:
                run.log(row)
            self._pending.clear()

    def log(self, row: dict[str, float]) -> None:
        with self._lock:
            if self.run is None:
                if self.error is None:
                    self._pending.append(row)
                return
        self.run.log(row)

    def close(self) -> str | None:
        """Finish the run; return the directory of an offline run (for `wandb sync`), else None."""
        self._thread.join(timeout=60)
        if self.run is None:
            return None
        run_path = Path(self.run.dir).parent
        self.run.finish()
        return str(run_path) if self.cfg.mode == "offline" else None


class TensorBoardSink:
    """TensorBoard event files in the run directory (logger.tensorboard): every numeric metric at its
    `global_step`, under the names of metrics.jsonl."""

    def __init__(self, run_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, row: dict[str, float]) -> None:
        step = int(row["global_step"])
        for key, value in row.items():
            if key != "global_step" and isinstance(value, int | float) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class ProgressSink:
    """A live rich progress bar: env steps, steps/s, mean return, ETA."""

    def __init__(self, total_steps: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]A3C"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:>11,.0f} steps"),
            TextColumn("{task.fields[sps]:>7,.0f}/s"),
            TextColumn("return(100) {task.fields[ret]:>7}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, sps=0.0, ret="-")
        self.progress.start()

    def log(self, row: dict[str, float]) -> None:
        ret = row.get("charts/mean_return_100")
        self.progress.update(
            self.task,
            completed=row["global_step"],
            sps=row.get("charts/SPS", 0.0),
            ret="-" if ret is None else f"{ret:.1f}",
        )

    def close(self) -> None:
        self.progress.stop()


class MetricsHub:
    """Fans each row out to every sink."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def log(self, row: dict[str, float]) -> None:
        for s in self.sinks:
            s.log(row)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
