"""What :func:`~functional_nn.locate` returns: :class:`LocateReport`, its table and JSON, and
the :class:`Culprit` of each wrong unit."""

from __future__ import annotations

import dataclasses
import json

import numpy as np


@dataclasses.dataclass(frozen=True)
class Culprit:
    """A unit whose derivative is wrong at the values of this call.

    Attributes:
        name: the custom function's name (``scaled_tanh``), or the primitive's
            (``stop_gradient``, ``tanh``, a primitive of your own).
        kind: ``"custom_vjp"``, ``"custom_jvp"``, ``"stop_gradient"`` or ``"primitive"`` (any
            other equation, checked where the units explain nothing).
        where: ``"file.py:LINE"`` of the user's code that called it.
        defined: ``"file.py:LINE"`` of its rule's function (``None`` where JAX does not say).
        argument: the 0-based position of the unit's input whose derivative is wrong.
        error: its error (normwise, relative), against ``tolerance``.
        calls: the enclosing calls, outermost first: ``("f", "scan(body)", "scaled_tanh")``.
        mode: ``"reverse"`` (its VJP) or ``"forward"`` (its JVP: a ``custom_jvp`` rule).
        iteration: the loop iteration it was checked at (``None`` outside loops).
        occurrence: which call of this site (same rule, line and enclosing calls) it is, in
            the program's order, 0-based: a layer written as a Python loop calls one site once
            per layer, so ``occurrence`` 1 is the second layer's.
        failed: of ``checked`` occurrences of this site, how many failed this argument; the
            culprit is the worst of them (one culprit per site, argument and mode).
    """

    name: str
    kind: str
    where: str
    defined: str | None
    argument: int
    error: float
    tolerance: float
    calls: tuple[str, ...]
    mode: str = "reverse"
    iteration: int | None = None
    occurrence: int = 0
    failed: int = 1
    checked: int = 1

    def __str__(self) -> str:
        at = f", defined at {self.defined}" if self.defined else ""
        it = f", iteration {self.iteration}" if self.iteration is not None else ""
        return (
            f"{self.name} ({self.kind}, {self.mode}) argument {self.argument}: called at "
            f"{self.where}{at}; error {self.error:.2e} > {self.tolerance:.0e} (call "
            f"{self.occurrence + 1} of {self.checked}{it}; {self.failed} of {self.checked} "
            f"failed); in {' > '.join(self.calls)}"
        )


@dataclasses.dataclass
class LocateReport:
    """What :func:`locate` checked and what it found.

    Attributes:
        culprits: the units whose derivative is wrong, the largest ``error / tolerance``
            first (most likely first).
        units: one dict per unit checked: name, kind, where, calls, iteration, occurrence
            (which call of its site), argument, mode, status (``"pass"``, ``"fail"``,
            ``"kink"``; ``"skipped"``: its output is not finite at these values), error,
            tolerance.
        unopened: the sub-programs holding a unit that could not be opened (a unit there
            is not checked).
        description: what was checked and how.
    """

    culprits: list[Culprit]
    units: list[dict]
    unopened: list[str]
    description: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No unit's derivative is wrong."""
        return not self.culprits

    def __str__(self) -> str:
        head = ("unit", "kind", "mode", "arg", "called at", "call", "in", "error", "tol",
                "status")  # fmt: skip
        lines = [
            (
                u["name"],
                u["kind"],
                u["mode"],
                str(u["argument"]),
                u["where"],
                str(u["occurrence"] + 1),
                " > ".join(u["calls"]),
                f"{u['error']:.2e}",
                f"{u['tolerance']:.0e}",
                u["status"],
            )  # fmt: skip
            for u in self.units
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
                  for i, h in enumerate(head)]  # fmt: skip
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        body = [fmt.format(*head).rstrip()] + [fmt.format(*line).rstrip() for line in lines]
        verdict = (
            "no culprit"
            if self.ok
            else "culprits:\n" + "\n".join(f"  {i + 1}. {c}" for i, c in enumerate(self.culprits))
        )
        if self.unopened:
            verdict += " among the units checked; not opened, their units unchecked:\n" + "\n".join(
                f"  {u}" for u in self.unopened
            )
        return "\n".join([f"locate: {self.description}", *body, verdict])

    def to_json(self, **kw) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "description": self.description,
                "culprits": [dataclasses.asdict(c) for c in self.culprits],
                "units": self.units,
                "unopened": self.unopened,
                "seconds": self.seconds,
            },
            **kw,
        )


def ratio(r) -> float:
    if r.tolerance > 0:
        return r.error / r.tolerance
    return np.inf if r.error > 0 else 0.0
