"""What the sections' renderers share: a rich table, a figure or a placeholder."""

from __future__ import annotations

from rich.table import Table


def table(title: str, columns, rows, left: int = 1) -> Table:
    """A table of ``rows`` (tuples of strings); the first ``left`` columns flush left."""
    t = Table(title=title)
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i < left else "right")
    for r in rows:
        t.add_row(*r)
    return t


def fmt(v, spec: str, none: str = "-") -> str:
    """``v`` formatted with ``spec``, or ``none`` for ``None``."""
    return none if v is None else format(v, spec)
