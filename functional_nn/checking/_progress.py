"""What the front doors share about a long check: its memory budget and its progress.

A check at research scale makes thousands of evaluations of an expensive ``f``. The library
prints nothing: it calls ``callback(progress)`` after every batch of evaluations, and
``scripts/`` show it with rich.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from functional_nn._util._validation import check_int
from functional_nn.differences._blocks import DEFAULT_BUDGET


class Progress(NamedTuple):
    """Where a check is: the leaf it works on (its path, its index of ``leaves``; for the
    screen, the first leaf of the group it tests), what it is doing there (``"ladder"``,
    ``"complex step"``, ``"central"``, ``"screen"``) and the evaluations of ``f`` made so far
    (the screen's float64 ones counted apart from the leaf-by-leaf ones)."""

    leaf: str
    index: int
    leaves: int
    stage: str
    evaluations: int


class Tracker:
    """Calls ``callback`` with a :class:`Progress` after every batch (a no-op without one)."""

    def __init__(self, callback: Callable[[Progress], None] | None, paths: list[str]):
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable (Progress -> None); got {callback!r:.60}")
        self.callback, self.paths, self.index = callback, paths, 0

    def leaf(self, index: int) -> None:
        self.index = index

    def __call__(self, evaluations: int, stage: str) -> None:
        if self.callback is not None:
            path = self.paths[self.index] if self.paths else ""
            self.callback(Progress(path, self.index, len(self.paths), stage, evaluations))


def check_budget(budget, where: str) -> int:
    """``memory_budget`` checked: None (the default, 256 MiB) or an int of bytes >= 1."""
    if budget is None:
        return DEFAULT_BUDGET
    return check_int(budget, "memory_budget", where)
