r"""``locate(f, params)``: which rule inside ``f``'s program makes its gradient wrong.

``check_grad`` names the leaf whose gradient is wrong; the bug lives in a rule: a
``jax.custom_vjp`` written for stability, a ``custom_jvp``, a kernel's backward, a
``stop_gradient`` in the wrong place. ``locate`` carries the lecture's local check (each
layer's Jacobian against differences of that layer) to any program: it runs ``f``'s program
once at ``params`` (:mod:`functional_nn.program._units`) and checks each *unit* at the values
this call gives it:

- a ``custom_vjp`` or ``custom_jvp`` call: ``u(x) = <c, rule(x)>``, with ``x`` the unit's
  inputs as ``f(params)`` computes them and ``c`` the cotangent that ``jax.grad(f)`` sends
  into its outputs (a random one where that is zero), is checked by :func:`check_grad`
  against differences of the unit's own primal: its steps, tolerances, float64 confirmation
  and kinks, so float32 gives no false culprit and a kink is a kink. A ``custom_jvp`` rule is
  also checked in forward mode (:func:`check_jvp`, random tangents). A failing input is a
  culprit: its position is ``argument``.
- a ``stop_gradient``: its derivative is zero by design, and often rightly so (the max of a
  stable ``log_softmax`` changes nothing to first order). It is a culprit when running it as
  the identity changes ``jax.grad(f)(params)``: by more than ``sqrt(eps)`` of the dtype
  relative to the gradient's largest entry, in some leaf (its path carried a derivative that
  was cut).

A culprit's derivative disagrees with its own primal's differences at these values (and, for
a ``stop_gradient``, the gradient of ``f`` depends on it). ``locate`` cannot see a wrong
derivative of one of JAX's own primitives, a rule that is right at these values and wrong at
others, or a primal that computes the wrong function (its rule may match it).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn.checking._progress import Progress
from functional_nn.program._reader import Split, trace
from functional_nn.program._units import Unit, Walk

_DOORS: dict[str, Callable] = {}
"""The front doors, registered by :func:`locating` as their modules load: ``locate`` checks
a unit with them without importing them (the front doors never import each other)."""


@dataclasses.dataclass(frozen=True)
class Culprit:
    """A unit whose derivative is wrong at the values of this call.

    Attributes:
        name: the custom function's name (``scaled_tanh``), or ``stop_gradient``.
        kind: ``"custom_vjp"``, ``"custom_jvp"`` or ``"stop_gradient"``.
        where: ``"file.py:LINE"`` of the user's code that called it.
        defined: ``"file.py:LINE"`` of its rule's function (``None`` where JAX does not say).
        argument: the 0-based position of the unit's input whose derivative is wrong.
        error: its error (normwise, relative), against ``tolerance``.
        calls: the enclosing calls, outermost first: ``("f", "scan(body)", "scaled_tanh")``.
        mode: ``"reverse"`` (its VJP) or ``"forward"`` (its JVP: a ``custom_jvp`` rule).
        iteration: the loop iteration it was checked at (``None`` outside loops).
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

    def __str__(self) -> str:
        at = f", defined at {self.defined}" if self.defined else ""
        it = f" (iteration {self.iteration})" if self.iteration is not None else ""
        return (
            f"{self.name} ({self.kind}, {self.mode}) argument {self.argument}: called at "
            f"{self.where}{at}; error {self.error:.2e} > {self.tolerance:.0e}{it}; in "
            f"{' > '.join(self.calls)}"
        )


@dataclasses.dataclass
class LocateReport:
    """What :func:`locate` checked and what it found.

    Attributes:
        culprits: the units whose derivative is wrong, the largest ``error / tolerance``
            first (most likely first).
        units: one dict per unit checked: name, kind, where, calls, iteration, status
            (``"pass"``, ``"fail"``, ``"kink"``), error, tolerance.
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
        head = ("unit", "kind", "mode", "arg", "called at", "in", "error", "tol", "status")
        lines = [
            (
                u["name"],
                u["kind"],
                u["mode"],
                str(u["argument"]),
                u["where"],
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


def locate(
    f: Callable[[Any], jax.Array],
    params: Any,
    *,
    key: jax.Array | None = None,
    cotangent: str = "program",
    callback: Callable[[Progress], None] | None = None,
) -> LocateReport:
    r"""Check every unit of ``f``'s program at the values of this call (module docstring).

    Args:
        f: ``params -> real scalar``, as :func:`~functional_nn.check_grad` takes it.
        params: any pytree (held leaves, complex leaves, Equinox and flax objects as
            ``check_grad`` takes them: the program is read at its array leaves).
        key: PRNG key of the random cotangents and tangents (default ``key(0)``).
        cotangent: ``"program"``: each unit's cotangent is the one ``jax.grad(f)`` sends
            into it (a random one where that is zero); ``"random"``: a random one always.
        callback: called with a :class:`~functional_nn.checking._progress.Progress` after
            each unit (``leaf`` the unit's name, ``index`` of ``leaves`` units, ``stage``
            ``"locate"``).

    Returns:
        :class:`LocateReport`: ``ok``, ``culprits`` (most likely first), ``units``.

    >>> import jax, jax.numpy as jnp
    >>> @jax.custom_vjp
    ... def double(x):
    ...     return 2 * x
    >>> double.defvjp(lambda x: (2 * x, None), lambda _, c: (2.1 * c,))
    >>> report = locate(lambda w: jnp.sum(jnp.sin(double(w))), jnp.arange(3.0))
    >>> [(c.name, c.argument) for c in report.culprits]
    [('double', 0)]
    """
    check_grad, check_jvp = _DOORS["grad"], _DOORS["jvp"]
    if cotangent not in ("program", "random"):
        raise ValueError(f"locate: cotangent must be 'program' or 'random'; got {cotangent!r}")
    start = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    split = Split((params,))
    if not split.traced:
        raise ValueError("locate: params has no array leaf: no program to read")
    closed, _ = trace(f, split)
    if len(closed.jaxpr.outvars) != 1 or closed.jaxpr.outvars[0].aval.shape != ():
        raise ValueError(f"locate: f must return a real scalar; got {closed.out_avals}")
    arrays = [jnp.asarray(a) for a in split.arrays()]
    seen = Walk(record=True)
    seen.run(closed, arrays)
    units = seen.units
    cts = _cotangents(closed, arrays, units) if cotangent == "program" else {}
    rows: list[dict] = []
    culprits: list[Culprit] = []
    outer = (getattr(f, "__name__", "f"),)
    as_written = None  # jax.grad(f), asked once for every stop_gradient
    for n, unit in enumerate(units):
        key, sub = jax.random.split(key)
        if unit.kind == "stop_gradient":
            if as_written is None:
                as_written = _grad_walk(closed, arrays, frozenset())
            found = _stop_gradient(closed, arrays, unit, as_written)
        else:
            found = _rule(unit, cts.get(unit.id), sub, check_grad, check_jvp)
        for row in found:
            calls = outer + unit.calls + (unit.name,)
            rows.append({"name": unit.name, "kind": unit.kind, "where": unit.where,
                         "defined": unit.defined, "calls": list(calls),
                         "iteration": unit.iteration, **row})  # fmt: skip
            if row["status"] == "fail":
                culprits.append(Culprit(unit.name, unit.kind, unit.where, unit.defined,
                                        row["argument"], row["error"], row["tolerance"],
                                        calls, row["mode"], unit.iteration))  # fmt: skip
        if callback is not None:
            callback(Progress(leaf=unit.name, index=n, leaves=len(units), stage="locate",
                              evaluations=n + 1))  # fmt: skip
    culprits.sort(key=lambda c: -_ratio(c))
    kinds = {k: sum(u.kind == k for u in units) for k in ("custom_vjp", "custom_jvp",
                                                          "stop_gradient")}  # fmt: skip
    description = (
        f"{len(units)} units checked ({kinds['custom_vjp']} custom_vjp, {kinds['custom_jvp']} "
        f"custom_jvp, {kinds['stop_gradient']} stop_gradient) at the values of this call, "
        f"each rule against differences of its own primal, with "
        + (
            "the cotangent jax.grad(f) sends into it"
            if cotangent == "program"
            else "random cotangents"
        )  # fmt: skip
        + ", each stop_gradient by what running it as the identity changes in jax.grad(f)"
    )
    if seen.unopened:
        description += f"; not opened (their units unchecked): {', '.join(seen.unopened)}"
    return LocateReport(culprits, rows, list(seen.unopened), description,
                        time.perf_counter() - start)  # fmt: skip


def _floating(s) -> bool:
    return jnp.issubdtype(s.dtype, jnp.inexact)


def _cotangents(closed, arrays, units: list[Unit]) -> dict:
    """``id -> the cotangents jax.grad(f) sends into that unit's outputs`` (one reverse
    pass: a zero added to every unit's floating outputs, differentiated)."""
    zeros = {
        u.id: [
            jnp.zeros(v.aval.shape, v.aval.dtype) if _floating(v.aval) else None
            for v in u.eqn.outvars
        ]  # fmt: skip
        for u in units
        if u.kind != "stop_gradient"
    }
    if not zeros:
        return {}

    def g(z):
        return jnp.real(Walk(perturb=z).run(closed, arrays)[0])

    return jax.grad(g)(zeros)


def _rule(unit: Unit, cts, key, check_grad, check_jvp) -> list[dict]:
    """The rows of one custom rule: its VJP along the program's cotangent (per input), and a
    ``custom_jvp`` rule's JVP along random tangents."""
    outs = [v.aval for v in unit.eqn.outvars]
    ct = [None if c is None else jnp.asarray(c) for c in (cts or [None] * len(outs))]
    if all(c is None or not bool(jnp.any(c != 0)) for c in ct):  # zero: a random one
        keys = jax.random.split(key, len(outs))
        ct = [jax.random.normal(k, s.shape, s.dtype) if _floating(s) else None
              for k, s in zip(keys, outs, strict=True)]  # fmt: skip

    def along(xs):
        ys = unit.call(*xs)
        return sum(jnp.sum(jnp.real(jnp.conj(c) * y)) for c, y in zip(ct, ys, strict=True)
                   if c is not None)  # fmt: skip

    along.__name__ = unit.name
    xs = tuple(unit.inputs)
    rows = _rows(check_grad(along, xs, taylor=False, key=key, locate=False), "reverse")
    if unit.kind == "custom_jvp":
        rows += _rows(check_jvp(lambda p: unit.call(*p), xs, key=key, locate=False), "forward")
    return rows


def _rows(report, mode: str) -> list[dict]:
    """Per input of the unit (its leaf ``[i]``): failed if any of its rows failed; the error
    and tolerance of its worst failing row, else of its first (the ``grad`` or ``jvp`` row)."""
    by_arg: dict[int, list] = {}
    for r in report.rows:
        if r.method != "taylor" and r.leaf.startswith("["):
            by_arg.setdefault(int(r.leaf[1:].split("]")[0]), []).append(r)
    out = []
    for arg in sorted(by_arg):
        rows = by_arg[arg]
        failed = [r for r in rows if r.status == "fail"]
        pick = max(failed, key=_ratio) if failed else rows[0]
        status = "fail" if failed else ("kink" if any(r.status == "kink" for r in rows) else "pass")
        out.append({"argument": arg, "mode": mode, "status": status, "error": float(pick.error),
                    "tolerance": float(pick.tolerance)})  # fmt: skip
    return out


def _ratio(r) -> float:
    if r.tolerance > 0:
        return r.error / r.tolerance
    return np.inf if r.error > 0 else 0.0


def _grad_walk(closed, arrays, identity: frozenset) -> list:
    """``jax.grad`` of the program at its floating inputs, the ``stop_gradient`` occurrences
    in ``identity`` run as the identity."""
    floating = [i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.inexact)]

    def g(xs):
        full = list(arrays)
        for i, x in zip(floating, xs, strict=True):
            full[i] = x
        return jnp.real(Walk(identity=identity).run(closed, full)[0])

    return jax.grad(g)([arrays[i] for i in floating])


def _stop_gradient(closed, arrays, unit: Unit, cut: list) -> list[dict]:
    """A ``stop_gradient`` judged by what it cuts: ``jax.grad(f)`` with it run as the
    identity against ``cut``, ``jax.grad(f)`` as written, leaf by leaf."""
    whole = _grad_walk(closed, arrays, frozenset({unit.id}))
    worst, tol = 0.0, 0.0
    for a, b in zip(cut, whole, strict=True):
        eps = float(jnp.finfo(b.dtype).eps)
        scale = float(jnp.max(jnp.abs(b))) if b.size else 0.0
        diff = float(jnp.max(jnp.abs(a - b))) if b.size else 0.0
        rel = diff / scale if scale > 0 else (np.inf if diff > 0 else 0.0)
        tol = max(tol, float(np.sqrt(eps)))
        worst = max(worst, rel)
    status = "fail" if worst > tol else "pass"
    return [{"argument": 0, "mode": "reverse", "status": status, "error": worst,
             "tolerance": tol}]  # fmt: skip
