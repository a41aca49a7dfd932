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

- with ``primitives=True`` (or ``"auto"``, what a failing check asks: where no custom rule or
  ``stop_gradient`` is a culprit), every other equation with a floating input and output is
  a unit of kind ``"primitive"``, checked like a rule: JAX's own rules, and a primitive of
  the user's own whose JVP or transpose rule is wrong.

A culprit's derivative disagrees with its own primal's differences at these values (and, for
a ``stop_gradient``, the gradient of ``f`` depends on it); a site called several times (a
layer in a Python loop) gives one culprit, its worst failing call named by ``occurrence``.
``locate`` cannot see a rule that is right at these values and wrong at others, or a primal
that computes the wrong function (its rule may match it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn.checking._locate_report import Culprit, LocateReport, ratio
from functional_nn.checking._progress import Progress
from functional_nn.program._reader import Split, trace
from functional_nn.program._units import Unit, Walk

DOORS: dict[str, Callable] = {}
"""The front doors, registered by :func:`locating` as their modules load: ``locate`` checks
a unit with them without importing them (the front doors never import each other)."""


def locate(
    f: Callable[[Any], jax.Array],
    params: Any,
    *,
    key: jax.Array | None = None,
    cotangent: str = "program",
    primitives: bool | str = False,
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
        primitives: ``False``: the units are the custom rules and ``stop_gradient``s;
            ``True``: every other equation with a floating input and output too (kind
            ``"primitive"``: JAX's own rule, or the rule of a primitive of your own), every
            sub-program opened; ``"auto"``: those equations only where the units explain
            nothing (no culprit among them), what a failing ``check_grad`` asks. An equation
            costs a check: a program of thousands takes minutes.
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
    check_grad, check_jvp = DOORS["grad"], DOORS["jvp"]
    if cotangent not in ("program", "random"):
        raise ValueError(f"locate: cotangent must be 'program' or 'random'; got {cotangent!r}")
    if primitives not in (True, False, "auto"):
        raise ValueError(f"locate: primitives must be True, False or 'auto'; got {primitives!r}")
    start = time.perf_counter()
    key = jax.random.key(0) if key is None else key
    split = Split((params,))
    if not split.traced:
        raise ValueError("locate: params has no array leaf: no program to read")
    closed, _ = trace(f, split)
    if len(closed.jaxpr.outvars) != 1 or closed.jaxpr.outvars[0].aval.shape != ():
        raise ValueError(f"locate: f must return a real scalar; got {closed.out_avals}")
    arrays = [jnp.asarray(a) for a in split.arrays()]
    outer = (getattr(f, "__name__", "f"),)
    seen = Walk(record=True, primitives=primitives is True)
    seen.run(closed, arrays)
    found = _Found(closed, arrays, outer, cotangent, callback)
    found.check(seen.units, key, check_grad, check_jvp, primitives is True)
    deeper = primitives == "auto" and not found.culprits and not seen.unopened
    if deeper:  # the units explain nothing: every other equation
        every = Walk(record=True, primitives=True)
        every.run(closed, arrays)
        found.check([u for u in every.units if u.kind == "primitive"], jax.random.fold_in(key, 1),
                    check_grad, check_jvp, True)  # fmt: skip
    units = found.units
    kinds = {k: sum(u.kind == k for u in units) for k in KINDS}
    description = (
        f"{len(units)} units checked ("
        + ", ".join(f"{n} {k}" for k, n in kinds.items() if n or k != "primitive")
        + ") at the values of this call, each rule against differences of its own primal, with "
        + (
            "the cotangent jax.grad(f) sends into it"
            if cotangent == "program"
            else "random cotangents"
        )  # fmt: skip
        + ", each stop_gradient by what running it as the identity changes in jax.grad(f)"
    )
    if deeper:
        description += "; no custom rule or stop_gradient was wrong: every other equation checked"
    if seen.unopened:
        description += f"; not opened (their units unchecked): {', '.join(seen.unopened)}"
    return LocateReport(_per_site(found.culprits, found.sites), found.rows, list(seen.unopened),
                        description, time.perf_counter() - start)  # fmt: skip


KINDS = ("custom_vjp", "custom_jvp", "stop_gradient", "primitive")


class _Found:
    """The rows and culprits of the units checked so far, in the program's order."""

    def __init__(self, closed, arrays, outer, cotangent: str, callback):
        self.closed, self.arrays, self.outer = closed, arrays, outer
        self.cotangent, self.callback = cotangent, callback
        self.units: list[Unit] = []
        self.rows: list[dict] = []
        self.culprits: list[Culprit] = []
        self.sites: dict[tuple, int] = {}  # (name, kind, where, calls) -> occurrences
        self._as_written = None  # jax.grad(f), asked once for every stop_gradient

    def check(self, units: list[Unit], key, check_grad, check_jvp, primitives: bool) -> None:
        """Check ``units``, recorded by a walk with ``primitives`` (the cotangents' walk
        numbers the units as that one did)."""
        closed, arrays = self.closed, self.arrays
        cts = (_cotangents(closed, arrays, units, primitives)
               if self.cotangent == "program" else {})  # fmt: skip
        for n, unit in enumerate(units):
            site = (unit.name, unit.kind, unit.where, unit.calls)
            occurrence = self.sites[site] = self.sites.get(site, -1) + 1
            key, sub = jax.random.split(key)
            if unit.kind == "stop_gradient":
                if self._as_written is None:
                    self._as_written = _grad_walk(closed, arrays, frozenset())
                found = _stop_gradient(closed, arrays, unit, self._as_written, primitives)
            else:
                found = _rule(unit, cts.get(unit.id), sub, check_grad, check_jvp)
            calls = self.outer + unit.calls + (unit.name,)
            for row in found:
                self.rows.append({"name": unit.name, "kind": unit.kind, "where": unit.where,
                                  "defined": unit.defined, "calls": list(calls),
                                  "iteration": unit.iteration, "occurrence": occurrence,
                                  **row})  # fmt: skip
                if row["status"] == "fail":
                    self.culprits.append(Culprit(
                        unit.name, unit.kind, unit.where, unit.defined, row["argument"],
                        row["error"], row["tolerance"], calls, row["mode"], unit.iteration,
                        occurrence))  # fmt: skip
            self.units.append(unit)
            if self.callback is not None:
                self.callback(Progress(leaf=unit.name, index=n, leaves=len(units),
                                       stage="locate", evaluations=len(self.units)))  # fmt: skip


def _per_site(culprits: list[Culprit], sites: dict) -> list[Culprit]:
    """One culprit per site, argument and mode: the worst failing occurrence, with how many
    of the site's occurrences failed; the largest ``error / tolerance`` first."""
    groups: dict[tuple, list[Culprit]] = {}
    for c in culprits:
        groups.setdefault((c.name, c.kind, c.where, c.calls, c.argument, c.mode), []).append(c)
    out = []
    for key, group in groups.items():
        worst = max(group, key=ratio)
        checked = sites[(key[0], key[1], key[2], key[3][1:-1])] + 1
        out.append(dataclasses.replace(worst, failed=len(group), checked=checked))
    return sorted(out, key=lambda c: -ratio(c))


def _floating(s) -> bool:
    return jnp.issubdtype(s.dtype, jnp.inexact)


def _cotangents(closed, arrays, units: list[Unit], primitives: bool) -> dict:
    """``id -> the cotangents jax.grad(f) sends into that unit's outputs`` (one reverse
    pass: a zero added to every unit's floating outputs, differentiated)."""
    zeros = {
        u.id: [
            jnp.zeros(v.aval.shape, v.aval.dtype) if _floating(v.aval) else None
            for v in u.eqn.outvars
        ]  # fmt: skip
        for u in units
        if u.kind != "stop_gradient"
    }  # a primitive unit's cotangent likewise
    if not zeros:
        return {}

    def g(z):
        return jnp.real(Walk(perturb=z, primitives=primitives).run(closed, arrays)[0])

    return jax.grad(g)(zeros)


def _rule(unit: Unit, cts, key, check_grad, check_jvp) -> list[dict]:
    """The rows of one custom rule (or primitive): its VJP along the program's cotangent (per
    input), and a ``custom_jvp`` rule's JVP along random tangents. An input with a non-finite
    entry (``-inf``, the start of a max) is held at its value, not checked; a unit whose
    output is not finite here is not checked (``"skipped"``)."""
    outs = [v.aval for v in unit.eqn.outvars]
    inputs = list(unit.inputs)
    free = [i for i, x in enumerate(inputs) if _finite(x)]
    if not free or not all(_finite(y) for y in unit.call(*inputs)):
        return [{"argument": 0, "mode": "reverse", "status": "skipped", "error": 0.0,
                 "tolerance": 0.0}]  # fmt: skip
    ct = [None if c is None else jnp.asarray(c) for c in (cts or [None] * len(outs))]
    if all(c is None or not bool(jnp.any(c != 0)) for c in ct):  # zero: a random one
        keys = jax.random.split(key, len(outs))
        ct = [jax.random.normal(k, s.shape, s.dtype) if _floating(s) else None
              for k, s in zip(keys, outs, strict=True)]  # fmt: skip

    def call(xs):
        full = list(inputs)
        for i, x in zip(free, xs, strict=True):
            full[i] = x
        return unit.call(*full)

    def along(xs):
        ys = call(xs)
        return sum(jnp.sum(jnp.real(jnp.conj(c) * y)) for c, y in zip(ct, ys, strict=True)
                   if c is not None)  # fmt: skip

    along.__name__ = unit.name
    xs = tuple(inputs[i] for i in free)
    rows = _rows(check_grad(along, xs, taylor=False, key=key, locate=False), "reverse")
    if unit.kind == "custom_jvp":
        rows += _rows(check_jvp(call, xs, key=key, locate=False), "forward")
    for row in rows:
        row["argument"] = free[row["argument"]]
    return rows


def _finite(x) -> bool:
    """No inf or nan in a floating value (anything else: finite)."""
    if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
        return True
    return bool(jnp.all(jnp.isfinite(jnp.asarray(x))))


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
        pick = max(failed, key=ratio) if failed else rows[0]
        status = "fail" if failed else ("kink" if any(r.status == "kink" for r in rows) else "pass")
        out.append({"argument": arg, "mode": mode, "status": status, "error": float(pick.error),
                    "tolerance": float(pick.tolerance)})  # fmt: skip
    return out


def _grad_walk(closed, arrays, identity: frozenset, primitives: bool = False) -> list:
    """``jax.grad`` of the program at its floating inputs, the ``stop_gradient`` occurrences
    in ``identity`` run as the identity."""
    floating = [i for i, a in enumerate(arrays) if jnp.issubdtype(a.dtype, jnp.inexact)]

    def g(xs):
        full = list(arrays)
        for i, x in zip(floating, xs, strict=True):
            full[i] = x
        return jnp.real(Walk(identity=identity, primitives=primitives).run(closed, full)[0])

    return jax.grad(g)([arrays[i] for i in floating])


def _stop_gradient(closed, arrays, unit: Unit, cut: list, primitives: bool) -> list[dict]:
    """A ``stop_gradient`` judged by what it cuts: ``jax.grad(f)`` with it run as the
    identity against ``cut``, ``jax.grad(f)`` as written, leaf by leaf."""
    whole = _grad_walk(closed, arrays, frozenset({unit.id}), primitives)
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
