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
compiled, whole). A unit occurrence records its inputs; given ``perturb``, a zero is added to
each recorded occurrence's floating outputs, so that ``jax.grad`` with respect to those zeros
gives the cotangent that the program's reverse pass sends into each unit, in one pass; given
``identity``, a ``stop_gradient`` occurrence is run as the identity (its path not cut).

The walk is deterministic: the same program at the same values meets its units in the same
order, so an occurrence is named by its position (``Unit.id``) in both runs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from functional_nn.program._float64 import CALLS, CHECKPOINTS, _bind, _closed
from functional_nn.program._reader import _open, source_line, sub_jaxprs

CUSTOM_VJP = ("custom_vjp_call", "custom_vjp_call_jaxpr")
CUSTOM_JVP = ("custom_jvp_call",)
STOP_GRADIENT = ("stop_gradient",)
UNIT_PRIMITIVES = CUSTOM_VJP + CUSTOM_JVP + STOP_GRADIENT

SCAN_PARAMS = {"num_consts", "num_carry", "length"}
"""The scan params the walk reads (jax 0.6 to 0.12.0). jax 0.12.1 describes its operands and
outputs by ``ft_in`` / ``ft_out`` instead, with outputs forwarded past the body: such a scan
is not opened (named in ``unopened``) until that layout is read."""

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
    for eqn in _open(jaxpr).eqns:
        if eqn.primitive.name in UNIT_PRIMITIVES:
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
    """

    def __init__(self, *, record: bool = False, perturb: dict | None = None,
                 identity: frozenset = frozenset()):  # fmt: skip
        self.record = record
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
        if name in UNIT_PRIMITIVES:
            return self._unit(eqn, invals)
        if not any(holds_unit(sub) for _, sub in sub_jaxprs(params)):
            return _bind(eqn.primitive, params, invals)
        if name in CALLS:
            sub = _closed(params.get("jaxpr", params.get("call_jaxpr")))
            return self._inside(f"jit({params.get('name', 'fn')})", sub, invals, eqn)
        if name in CHECKPOINTS:
            return self._inside("checkpoint", _closed(params["jaxpr"]), invals, eqn)
        if name == "cond":
            index = int(invals[0])  # concrete: the walk runs at values, under grad too
            branch = _closed(params["branches"][index])
            return self._inside(f"cond(branch {index})", branch, invals[1:], eqn)
        if name == "scan" and not SCAN_PARAMS <= set(params):  # jax 0.12.1: ft_in, ft_out
            return self._unopened(eqn, invals, "its layout in this JAX release is not read")
        if name == "scan":
            return self._scan(eqn, invals)
        if name == "while":
            return self._while(eqn, invals)
        return self._unopened(eqn, invals, "not a call, branch or loop locate opens")

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

    def _scan(self, eqn, invals):
        params = eqn.params
        nc, ncarry, length = params["num_consts"], params["num_carry"], params["length"]
        body = _closed(params["jaxpr"])
        consts, carry, xs = invals[:nc], list(invals[nc : nc + ncarry]), invals[nc + ncarry :]
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
                carry, ys[i] = list(out[:ncarry]), out[ncarry:]
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

    def _while(self, eqn, invals):
        params = eqn.params
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

    def _unit(self, eqn, invals):
        name = eqn.primitive.name
        uid = None
        if self._sampled[-1]:
            uid = self._count
            self._count += 1
            if self.record:
                unit = _describe(uid, eqn, invals, tuple(self._calls), self._iteration[-1])
                if unit.where == "unknown line":  # inside a library: where the user called it
                    unit.where = next((w for w in reversed(self._lines) if w != "unknown line"),
                                      unit.where)  # fmt: skip
                self.units.append(unit)
        if name in STOP_GRADIENT and uid in self.identity:
            outs = [invals[0]]
        else:
            outs = _bind(eqn.primitive, eqn.params, invals)
            outs = list(outs) if eqn.primitive.multiple_results else [outs]
        if uid in self.perturb:
            outs = [o + z if z is not None else o for o, z in zip(outs, self.perturb[uid],
                                                                  strict=True)]  # fmt: skip
        return outs if eqn.primitive.multiple_results else outs[0]


def _sample(total: int) -> set[int]:
    """The positions of the sampled iterations of a loop of ``total``."""
    if total <= SAMPLE:
        return set(range(total))
    return {round(j * (total - 1) / (SAMPLE - 1)) for j in range(SAMPLE)}


def _describe(uid, eqn, invals, calls, iteration) -> Unit:
    name = eqn.primitive.name
    if name in CUSTOM_VJP:
        kind = "custom_vjp"
    elif name in CUSTOM_JVP:
        kind = "custom_jvp"
    else:
        kind = "stop_gradient"
    fn_name, defined = _names(eqn, kind)
    return Unit(uid, kind, fn_name, source_line(eqn), defined, calls, iteration, eqn,
                [_concrete(a) for a in invals])  # fmt: skip


def _concrete(a):
    return a if isinstance(a, (np.ndarray, np.generic, int, float, complex)) else jnp.asarray(a)


def _names(eqn, kind: str) -> tuple[str, str | None]:
    """The custom function's name and where its rule is defined, as JAX's debug info has them
    (``"fn at /path/file.py:12"``); the primitive's name and ``None`` where it says nothing."""
    if kind == "stop_gradient":
        return "stop_gradient", None
    params = eqn.params
    primal = params.get("call_jaxpr", params.get("fun_jaxpr"))
    name, defined = _src(getattr(_open(primal), "debug_info", None))
    rule = (
        params.get("bwd")
        if kind == "custom_vjp"
        else params.get("jvp_jaxpr_fun", params.get("jvp_jaxpr_thunk"))
    )
    rule_name, rule_defined = _src(getattr(rule, "debug_info", None))
    if rule_defined is None:
        rule_defined = _function_line(rule)
    return (name or rule_name or eqn.primitive.name), (rule_defined or defined)


def _src(debug) -> tuple[str | None, str | None]:
    """``(name, "file.py:LINE")`` from a JAX debug info, or ``(None, None)``."""
    info = getattr(debug, "func_src_info", None)
    if not isinstance(info, str) or not info:
        return None, None
    name, _, place = info.partition(" at ")
    if not place:
        return name or None, None
    file, _, line = place.rpartition(":")
    return (name or None), f"{os.path.basename(file)}:{line}"


def _function_line(fn) -> str | None:
    """``"file.py:LINE"`` of a Python function reached through JAX's wrappers, or None."""
    seen = 0
    while fn is not None and seen < 8:
        seen += 1
        code = getattr(fn, "__code__", None)
        if code is not None:
            return f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
        fn = getattr(fn, "f", None) or getattr(fn, "func", None) or getattr(fn, "__wrapped__", None)
    return None
