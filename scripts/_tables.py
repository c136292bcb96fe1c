"""Print the benchmark harnesses' tables: rich when available, plain aligned text with --plain."""

from __future__ import annotations

import sys

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
