r"""The units of a program and the values one call gives them: what ``locate`` checks.

A *unit* is an equation whose derivative is not JAX's own rule for its primal: a
``custom_vjp`` or ``custom_jvp`` call (its rule is the user's), and a ``stop_gradient`` (its
derivative is zero, its primal the identity). :class:`Walk` runs ``f``'s program eagerly, at
concrete values, equation by equation, opening only the sub-programs that hold a unit:

- ``jit`` / ``pjit`` and ``checkpoint`` are run in place (their program is the same);
- ``cond`` runs the branch its index takes at these values;
- ``scan`` runs its body once per iteration (every iteration, in its order), and ``while``
  its body while its condition holds; a unit inside is recorded at :data:`SAMPLE` of the
  iterations (the first, the last and evenly between: the carried values of those
  iterations), so a long loop costs its eager run, not a check per iteration;
- ``vmap``'s program is already batched: a unit under it is the batched unit;
- inside a custom rule's primal nothing is opened (the rule, not the primal, differentiates).

Every other equation is bound as the program has it (a sub-program without a unit is run
compiled, whole); with ``primitives``, every sub-program is opened and every other equation
with a floating input and output is a unit too (kind ``"primitive"``). A call, branch or loop
whose params this release lays out otherwise, or a custom rule under a name not read, is run
as it is and named in ``unopened`` (the layouts read: :mod:`._layouts`). A unit occurrence
records its inputs; given ``perturb``, a zero is added to each recorded occurrence's floating
outputs, so that ``jax.grad`` with respect to those zeros
gives the cotangent that the program's reverse pass sends into each unit, in one pass; given
``identity``, a ``stop_gradient`` occurrence is run as the identity (its path not cut).

The walk is deterministic: the same program at the same values meets its units in the same
order, so an occurrence is named by its position (``Unit.id``) in both runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

import functional_nn.program._layouts as layouts
from functional_nn.program._float64 import CALLS, CHECKPOINTS, _bind, _closed
from functional_nn.program._reader import open_jaxpr, source_line, sub_jaxprs

SAMPLE = 4
"""Iterations of a loop at which a unit inside it is recorded (all of a shorter loop)."""


@dataclasses.dataclass
class Unit:
    """One occurrence of a unit in one call of the program.

    Attributes:
        id: its position in the walk; kind: ``"custom_vjp"``, ``"custom_jvp"`` or
            ``"stop_gradient"``; name: the custom function's name (its primal's), or the
            primitive's; where: ``"file.py:LINE"`` of the user's code that called it;
            defined: where the rule's function is defined (``None`` where JAX does not say);
            calls: the enclosing calls, outermost first (``("scan(body)", "jit(block)")``);
            iteration: its loop iteration (innermost loop), ``None`` outside loops;
            eqn: the equation; inputs: the values this call gave it.
    """

    id: int
    kind: str
    name: str
    where: str
    defined: str | None
    calls: tuple[str, ...]
    iteration: int | None
    eqn: Any
    inputs: list

    def call(self, *args):
        """The unit as the program binds it (its custom rule differentiates it)."""
        out = _bind(self.eqn.primitive, self.eqn.params, args)
        return list(out) if self.eqn.primitive.multiple_results else [out]


@functools.lru_cache(maxsize=1024)
def holds_unit(jaxpr) -> bool:
    """Whether a program holds a unit (outside custom rules' primals); asked once per
    program, not at every equation of every loop iteration."""
    for eqn in open_jaxpr(jaxpr).eqns:
        if eqn.primitive.name in layouts.UNIT_PRIMITIVES or layouts.looks_like_rule(eqn.params):
            return True
        if any(holds_unit(sub) for _, sub in sub_jaxprs(eqn.params)):
            return True
    return False


class Walk:
    """One eager run of a program (module docstring).

    Args:
        record: collect the :class:`Unit` occurrences met (``units``).
        perturb: ``id -> list of zeros`` added to that occurrence's floating outputs.
        identity: ids of ``stop_gradient`` occurrences run as the identity.
        primitives: every other equation with a floating input and output is a unit too
            (kind ``"primitive"``: JAX's own rule, or a primitive of the user's), and every
            sub-program is opened.
    """

    def __init__(self, *, record: bool = False, perturb: dict | None = None,
                 identity: frozenset = frozenset(), primitives: bool = False):  # fmt: skip
        self.record = record
        self.primitives = primitives
        self.perturb = perturb or {}
        self.identity = identity
        self.units: list[Unit] = []
        self.unopened: list[str] = []
        self._count = 0
        self._calls: list[str] = []
        self._lines: list[str] = []  # the user's lines of the enclosing calls
        self._iteration: list[int | None] = [None]
        self._sampled: list[bool] = [True]

    def run(self, closed, args) -> list:
        return self._run(closed.jaxpr, closed.consts, list(args))

    def _run(self, jaxpr, consts, args) -> list:
        env: dict = {}

        def read(a):
            return a.val if isinstance(a, jcore.Literal) else env[a]

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = c
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            outs = self._apply(eqn, [read(a) for a in eqn.invars])
            if not eqn.primitive.multiple_results:
                outs = [outs]
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [read(a) for a in jaxpr.outvars]

    def _apply(self, eqn, invals):
        name, params = eqn.primitive.name, eqn.params
        if name in layouts.UNIT_PRIMITIVES:
            return self._unit(eqn, invals, _kind(name))
        if layouts.looks_like_rule(params):  # a custom rule under a name not read
            return self._unopened(eqn, invals, "a custom rule of a form locate does not read")
        if not self.primitives and not any(holds_unit(sub) for _, sub in sub_jaxprs(params)):
            return _bind(eqn.primitive, params, invals)
        try:
            opened = self._opener(eqn, invals)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as err:
            return self._unopened(eqn, invals, f"its params are not read here ({err!r})")
        if opened is not None:
            return opened()
        if self.primitives:
            if _differentiable(eqn):
                return self._unit(eqn, invals, "primitive")
            return _bind(eqn.primitive, params, invals)
        return self._unopened(eqn, invals, "not a call, branch or loop locate opens")

    def _opener(self, eqn, invals) -> Callable | None:
        """The run of a call, branch or loop, its params read now (a ``KeyError`` here is a
        layout not read: the caller names it unopened); ``None`` for any other equation."""
        name, params = eqn.primitive.name, eqn.params
        if name in CALLS:
            found = [params[k] for k in layouts.CALL_JAXPR if k in params]
            if not found:
                raise KeyError(f"none of {layouts.CALL_JAXPR}")
            sub = _closed(found[0])
            return lambda: self._inside(f"jit({params.get('name', 'fn')})", sub, invals, eqn)
        if name in CHECKPOINTS:
            sub = _closed(params[layouts.CHECKPOINT_JAXPR])
            return lambda: self._inside("checkpoint", sub, invals, eqn)
        if name == "cond":
            index = int(invals[0])  # concrete: the walk runs at values, under grad too
            branch = _closed(params[layouts.COND_BRANCHES][index])
            return lambda: self._inside(f"cond(branch {index})", branch, invals[1:], eqn)
        if name == "scan":
            layout = layouts.scan_layout(params)
            if layout is None:
                raise KeyError("scan: neither num_consts/num_carry nor ft_in/ft_out")
            return lambda: self._scan(eqn, invals, *layout)
        if name == "while":
            read = {k: params[k] for k in layouts.WHILE_PARAMS}
            return lambda: self._while(eqn, read, invals)
        return None

    def _unopened(self, eqn, invals, why: str):
        """Bound as it is: the units inside are not checked, and the report says so."""
        self.unopened.append(f"{eqn.primitive.name} at {source_line(eqn)} ({why})")
        return _bind(eqn.primitive, eqn.params, invals)

    def _inside(self, label, closed, invals, eqn=None):
        self._calls.append(label)
        self._lines.append(source_line(eqn) if eqn is not None else "unknown line")
        try:
            return self.run(closed, invals)
        finally:
            self._calls.pop()
            self._lines.pop()

    def _loop(self, label: str, eqn, total: int | None, body: Callable):
        """Run ``body(keep)``, the loop's iterations with the sampled ones (``keep``, for a
        scan of ``total``) marked."""
        keep = _sample(total) if total is not None else None
        self._calls.append(label)
        self._lines.append(source_line(eqn))
        try:
            return body(keep)
        finally:
            self._calls.pop()
            self._lines.pop()

    def _enter(self, i: int, sampled: bool):
        self._iteration.append(i)
        self._sampled.append(sampled and self._sampled[-1])

    def _leave(self):
        self._iteration.pop()
        self._sampled.pop()

    def _scan(self, eqn, invals, operands: Callable, outputs: Callable):
        params = eqn.params
        length = params["length"]
        body = _closed(params["jaxpr"])
        consts, carry, xs = operands(invals)
        ncarry = len(carry)
        order = range(length - 1, -1, -1) if params.get("reverse", False) else range(length)

        def iterate(keep):
            nonlocal carry
            ys: dict[int, list] = {}
            for step, i in enumerate(order):
                self._enter(i, step in keep)
                try:
                    out = self.run(body, [*consts, *carry, *(x[i] for x in xs)])
                finally:
                    self._leave()
                carry, ys[i] = outputs(out)
            n_ys = len(body.jaxpr.outvars) - ncarry
            stacked = [
                jnp.stack([ys[i][j] for i in range(length)])
                if length
                else jnp.zeros(
                    (0, *body.jaxpr.outvars[ncarry + j].aval.shape),
                    body.jaxpr.outvars[ncarry + j].aval.dtype,
                )  # fmt: skip
                for j in range(n_ys)
            ]
            return [*carry, *stacked]

        return self._loop("scan(body)", eqn, length, iterate)

    def _while(self, eqn, params, invals):
        nc, nb = params["cond_nconsts"], params["body_nconsts"]
        cconsts, bconsts, carry = invals[:nc], invals[nc : nc + nb], list(invals[nc + nb :])
        cond, body = _closed(params["cond_jaxpr"]), _closed(params["body_jaxpr"])

        def iterate(_):
            nonlocal carry
            i = 0
            while bool(self.run(cond, [*cconsts, *carry])[0]):
                self._enter(i, i < SAMPLE)  # the first iterations: the count is not known
                try:
                    carry = list(self.run(body, [*bconsts, *carry]))
                finally:
                    self._leave()
                i += 1
            return carry

        return self._loop("while(body)", eqn, None, iterate)

    def _unit(self, eqn, invals, kind: str):
        name = eqn.primitive.name
        uid = None
        if self._sampled[-1]:
            uid = self._count
            self._count += 1
            if self.record:
                unit = _describe(uid, kind, eqn, invals, tuple(self._calls),
                                 self._iteration[-1])  # fmt: skip
                if unit.where == "unknown line":  # inside a library: where the user called it
                    unit.where = next((w for w in reversed(self._lines) if w != "unknown line"),
                                      unit.where)  # fmt: skip
                self.units.append(unit)
        if name in layouts.STOP_GRADIENT and uid in self.identity:
            outs = [invals[0]]
        else:
            outs = _bind(eqn.primitive, eqn.params, invals)
            outs = list(outs) if eqn.primitive.multiple_results else [outs]
        if uid in self.perturb:
            zs = self.perturb[uid]
            pairs = zip(outs, zs, strict=True)
            if any(z is not None and jnp.shape(z) != jnp.shape(o) for o, z in pairs):
                raise RuntimeError(f"locate: unit {uid} ({name}) is not the unit recorded: "
                                   "the walks disagree")  # fmt: skip
            outs = [o + z if z is not None else o for o, z in zip(outs, zs, strict=True)]
        return outs if eqn.primitive.multiple_results else outs[0]


def _sample(total: int) -> set[int]:
    """The positions of the sampled iterations of a loop of ``total``."""
    if total <= SAMPLE:
        return set(range(total))
    return {round(j * (total - 1) / (SAMPLE - 1)) for j in range(SAMPLE)}


def _kind(name: str) -> str:
    if name in layouts.CUSTOM_VJP:
        return "custom_vjp"
    return "custom_jvp" if name in layouts.CUSTOM_JVP else "stop_gradient"


def _differentiable(eqn) -> bool:
    """A floating input and a floating output: a derivative to check."""

    def floating(v):
        return jnp.issubdtype(getattr(v.aval, "dtype", np.dtype(int)), jnp.inexact)

    return any(floating(v) for v in eqn.invars) and any(floating(v) for v in eqn.outvars)


def _describe(uid, kind, eqn, invals, calls, iteration) -> Unit:
    fn_name, defined = layouts.names(eqn, kind)
    return Unit(uid, kind, fn_name, source_line(eqn), defined, calls, iteration, eqn,
                [_concrete(a) for a in invals])  # fmt: skip


def _concrete(a):
    return a if isinstance(a, (np.ndarray, np.generic, int, float, complex)) else jnp.asarray(a)
