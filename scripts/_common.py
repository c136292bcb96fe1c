"""What the benchmark scripts share: strict JSON, killing a child's process group, argument and number
formatting, and their tables (rich when available, plain aligned text with --plain).

The scripts import it as `_common`: a script's own directory is on sys.path when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
from typing import Any


def finite_json(v: Any) -> Any:
    """`v` with every non-finite float (nan, inf) as None, so the file is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: finite_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [finite_json(x) for x in v]
    return v


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, the process group `proc` leads (it was started in a session of its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def fmt(v: Any, spec: str = ".0f") -> str:
    """A table cell: '-' for a missing or non-finite value."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def int_list(text: str) -> list[int]:
    """argparse type: '1,2,4' -> [1, 2, 4] (sorted, distinct, each >= 1)."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: need at least one count, each >= 1")
    return values


Table = tuple[str, list[str], list[list[str]]]  # title, header, rows of already-formatted cells


def print_tables(tables: list[Table], plain: bool, first_column_left: bool = True) -> None:
    try:
        if plain:
            raise ImportError
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        for title, head, body in tables:
            widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]
            print(f"\n{title}")
            for row in [head, *body]:
                cells = [
                    c.ljust(w) if i == 0 and first_column_left else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                ]
                print("  ".join(cells))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    for title, head, body in tables:
        table = RichTable(title=title)
        for i, h in enumerate(head):
            table.add_column(h, justify="left" if i == 0 and first_column_left else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
