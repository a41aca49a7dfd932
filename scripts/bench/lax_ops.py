"""An outside suite for the checkers: the float ops of JAX's own ``tests/lax_autodiff_test.py``.

The op table (``LAX_GRAD_OPS`` and ``LAX_GRAD_OPS_WITH_OUT_DTYPE`` there) is rebuilt here with
JAX's input draws (``jax._src.test_util``'s ``rand_default``, ``rand_small``, ``rand_positive``,
``rand_not_small``, ``rand_uniform``, on NumPy's ``RandomState(seed)``), at the shape (3, 4).
Left out: the ops of complex inputs or outputs (``real``, ``imag``, ``complex``, ``conj``),
whose outputs the checkers, which take real functions, do not take. Changed: ``asin`` and
``acos`` draw from (-0.9, 0.9), not JAX's (-1.3, 1.3), whose draws outside [-1, 1] make
``nan``s that the checkers refuse (their own error, not a verdict). Added: ``atan``, from
JAX's special-value table.

Each op is checked two ways, in float32 and float64:

- ``check_grad`` of the scalar :math:`\\sum \\sin(\\mathrm{op}(x, \\dots))`, the arguments a
  tuple of leaves ``[0]``, ``[1]`` (``sin`` makes fast-varying ops hard for finite
  differences: ``sin(expm1(x))`` at ``x = 6`` turns 230 radians for a float32 step);
- ``check_vjp`` of the op itself, with a ``pattern`` for the ops with kinks (``floor``,
  ``ceil``, ``round``: their steps; ``max``, ``min``: which argument wins; ``abs``: the sign).

and with planted VJP bugs, through a ``jax.custom_vjp`` whose backward pass is the op's own
VJP with one argument's cotangent scaled (5% in float32, 1% in float64) or zeroed. A correct
op must pass; a planted bug must fail, on the planted argument's leaf and on no other.

A third column, ``locate``: the op inside a small program (:func:`program`: a fixed diagonal
linear map before it, ``tanh`` and a sum after), ``fnn.locate(program, args,
primitives="auto")``, what a failing ``check_grad`` runs. A planted bug must be the one
culprit, named at the op's line of :func:`program` (:data:`UNIT_LINE`) with its argument; a
correct program must give no culprit with every equation checked (JAX's own rules against
differences of their primals: the ``"auto"`` tier, since no custom rule is wrong).
Ops whose gradient is zero (``floor``, ``ceil``, ``round``) carry no plant: a scaled zero is
the same zero.

    from bench import lax_ops
    lax_ops.run_all(seeds=(0, 1, 2))  # see scripts/lax_suite.py
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import functional_nn as fnn

SHAPE = (3, 4)
DTYPES = ("float32", "float64")
OFF = {"float32": 0.05, "float64": 0.01}


# -- JAX's draws ---------------------------------------------------------------------------------


def rand_default(rs, shape):
    return 3.0 * rs.randn(*shape)


def rand_small(rs, shape):
    return 1e-3 * rs.randn(*shape)


def rand_positive(rs, shape):
    return 2.0 * rs.rand(*shape) + 1.0


def rand_not_small(rs, shape, offset=10.0):
    x = 3.0 * rs.randn(*shape)
    return x + np.where(x > 0, offset, -offset)


def rand_uniform(low, high):
    def draw(rs, shape):
        return rs.uniform(low, high, shape)

    return draw


CHECKERS = ("check_grad", "check_vjp", "locate")


class Op(NamedTuple):
    name: str
    fn: Callable
    nargs: int
    draw: Callable
    pattern: Callable | None = None  # args -> bool array: changes where a step crosses a kink
    differentiable: bool = True  # False: the gradient is zero, no bug can be planted


def _parity(rounding):
    def pattern(args):
        return (rounding(args[0]) % 2) == 0

    return pattern


_MUL_TAKES_OUT_DTYPE = "preferred_element_type" in inspect.signature(lax.mul).parameters


def _mul_f32(x, y):
    """``lax.mul(x, y, preferred_element_type=float32)`` (JAX's ``LAX_GRAD_OPS_WITH_OUT_DTYPE``)
    where the running jax has it; before it (jax 0.10), the product rounded to float32: the
    same float32 output of float64 inputs."""
    if jnp.real(x).dtype != jnp.float64:  # float32 (or its complex step): a plain product
        return x * y
    if _MUL_TAKES_OUT_DTYPE:
        return lax.mul(x, y, preferred_element_type=jnp.float32)
    return (x * y).astype(jnp.float32)


OPS = [
    Op("neg", lax.neg, 1, rand_default),
    Op("floor", lax.floor, 1, rand_uniform(0.1, 0.4), _parity(jnp.floor), False),
    Op("ceil", lax.ceil, 1, rand_uniform(0.1, 0.4), _parity(jnp.ceil), False),
    Op("round", lax.round, 1, rand_uniform(0.1, 0.4), _parity(jnp.round), False),
    Op("exp", lax.exp, 1, rand_small),
    Op("exp2", lax.exp2, 1, rand_small),
    Op("expm1", lax.expm1, 1, rand_default),
    Op("log", lax.log, 1, rand_positive),
    Op("log1p", lax.log1p, 1, rand_positive),
    Op("sinh", lax.sinh, 1, rand_default),
    Op("cosh", lax.cosh, 1, rand_default),
    Op("tanh", lax.tanh, 1, rand_default),
    Op("sin", lax.sin, 1, rand_default),
    Op("cos", lax.cos, 1, rand_default),
    Op("tan", lax.tan, 1, rand_uniform(-1.3, 1.3)),
    Op("asin", lax.asin, 1, rand_uniform(-0.9, 0.9)),
    Op("acos", lax.acos, 1, rand_uniform(-0.9, 0.9)),
    Op("atan", lax.atan, 1, rand_default),
    Op("atan2", lax.atan2, 2, rand_default),
    Op("erf", lax.erf, 1, rand_small),
    Op("erfc", lax.erfc, 1, rand_small),
    Op("erf_inv", lax.erf_inv, 1, rand_small),
    Op("bessel_i0e", lax.bessel_i0e, 1, rand_default),
    Op("bessel_i1e", lax.bessel_i1e, 1, rand_default),
    Op("abs", lax.abs, 1, rand_positive, lambda a: a[0] > 0),
    Op("pow", lax.pow, 2, rand_positive),
    Op("sqrt", lax.sqrt, 1, rand_positive),
    Op("rsqrt", lax.rsqrt, 1, rand_positive),
    Op("cbrt", lax.cbrt, 1, rand_not_small),
    Op("logistic", lax.logistic, 1, rand_default),
    Op("add", lax.add, 2, rand_default),
    Op("sub", lax.sub, 2, rand_default),
    Op("mul", lax.mul, 2, rand_default),
    Op("div", lax.div, 2, rand_not_small),
    Op("max", lax.max, 2, rand_default, lambda a: a[0] > a[1]),
    Op("min", lax.min, 2, rand_default, lambda a: a[0] < a[1]),
    Op("mul out float32", _mul_f32, 2, rand_default),
]
BY_NAME = {op.name: op for op in OPS}


def args_of(op: Op, seed: int, dtype: str) -> tuple:
    """The op's arguments as JAX's test draws them: one ``RandomState(seed)`` for all."""
    rs = np.random.RandomState(seed)
    return tuple(jnp.asarray(op.draw(rs, SHAPE), dtype) for _ in range(op.nargs))


def scalar(fn: Callable) -> Callable:
    """:math:`\\sum \\sin(\\mathrm{fn}(\\text{args}))`, of the tuple of arguments."""
    return lambda args: jnp.sum(jnp.sin(fn(*args)))


def planted(fn: Callable, nargs: int, arg: int, factor: float) -> Callable:
    """``fn`` whose VJP scales argument ``arg``'s cotangent by ``factor`` (0: zeroed)."""

    @jax.custom_vjp
    def g(*args):
        return fn(*args)

    def fwd(*args):
        return fn(*args), args

    def bwd(args, ct):
        cts = list(jax.vjp(fn, *args)[1](ct))
        cts[arg] = cts[arg] * jnp.asarray(factor, cts[arg].dtype)
        return tuple(cts)

    g.defvjp(fwd, bwd)
    return g


def program(fn: Callable, scale: tuple) -> Callable:
    """``sum(tanh(fn(s_0 x_0, s_1 x_1, ...)))``, the ``s_i`` fixed in [0.9, 1) (a linear map
    that keeps each draw's domain)."""

    def located(args):
        moved = [a * jnp.asarray(s, a.dtype) for a, s in zip(args, scale, strict=True)]
        out = fn(*moved)  # the unit
        return jnp.sum(jnp.tanh(out))

    return located


UNIT_LINE = next(i for i, line in enumerate(inspect.getsource(program).splitlines(),
                                            inspect.getsourcelines(program)[1])
                 if line.rstrip().endswith("# the unit"))  # fmt: skip
"""The line of :func:`program` that calls the op: a planted culprit's ``where``."""


def _scale(args, seed: int) -> tuple:
    rs = np.random.RandomState(1000 + seed)
    return tuple(rs.uniform(0.9, 1.0, np.shape(a)) for a in args)


class Case(NamedTuple):
    op: str
    dtype: str
    seed: int
    checker: str  # "check_grad", "check_vjp" or "locate"
    plant: str  # "" (right code), "scale [i]" or "zero [i]"
    ok: bool
    failing: tuple  # the leaves with a failing row
    seconds: float
    report: str

    @property
    def right(self) -> bool:
        """A right verdict: right code passes; a plant fails on its leaf alone."""
        if not self.plant:
            return self.ok
        return (not self.ok) and self.failing == (self.plant.split(" ", 1)[1],)


def run_case(op: Op, dtype: str, seed: int, checker: str, plant: str = "") -> Case:
    """One check of ``op``: right (``plant=""``) or planted (``"scale [i]"``, ``"zero [i]"``)."""
    args = args_of(op, seed, dtype)
    fn = op.fn
    if plant:
        kind, leaf = plant.split(" ", 1)
        factor = 0.0 if kind == "zero" else 1.0 + OFF[dtype]
        fn = planted(op.fn, op.nargs, int(leaf.strip("[]")), factor)
    start = time.perf_counter()
    if checker == "locate":
        report = fnn.locate(program(fn, _scale(args, seed)), args, key=jax.random.key(seed),
                            primitives="auto")  # fmt: skip
        seconds = time.perf_counter() - start
        failing = tuple(sorted({f"[{c.argument}] at {c.where}" for c in report.culprits}))
        if plant and failing == (f"[{plant.split('[')[1].rstrip(']')}] at lax_ops.py:{UNIT_LINE}",):
            failing = (plant.split(" ", 1)[1],)  # the planted unit, its argument, its line
        return Case(op.name, dtype, seed, checker, plant, report.ok, failing, seconds,
                    str(report))  # fmt: skip
    if checker == "check_grad":
        pattern = None if op.pattern is None else op.pattern
        report = fnn.check_grad(scalar(fn), args, pattern=pattern, key=jax.random.key(seed))
    else:
        report = fnn.check_vjp(lambda a: fn(*a), args, pattern=op.pattern,
                               key=jax.random.key(seed))  # fmt: skip
    seconds = time.perf_counter() - start
    failing = tuple(sorted({r.leaf for r in report.rows if r.status == "fail"}))
    return Case(op.name, dtype, seed, checker, plant, report.ok, failing, seconds, str(report))


def plants(op: Op) -> list[str]:
    """The bugs planted in ``op``: each argument scaled, each zeroed (none for a zero
    gradient)."""
    if not op.differentiable:
        return []
    return [f"{kind} [{i}]" for i in range(op.nargs) for kind in ("scale", "zero")]


def cases(ops=OPS, dtypes=DTYPES, seeds=(0, 1, 2), plant_seeds=(0,), checkers=CHECKERS):
    """Every (op, dtype, seed, checker, plant) of the suite: right code at every seed, the
    plants at ``plant_seeds``."""
    for op in ops:
        for dtype in dtypes:
            for checker in checkers:
                for seed in seeds:
                    yield op, dtype, seed, checker, ""
                for seed in plant_seeds:
                    for plant in plants(op):
                        yield op, dtype, seed, checker, plant


def run_all(ops=OPS, dtypes=DTYPES, seeds=(0, 1, 2), plant_seeds=(0,), on_case=None,
            checkers=CHECKERS):  # fmt: skip
    """Run :func:`cases`; ``on_case(case)`` after each. Returns the list of :class:`Case`."""
    out = []
    for spec in cases(ops, dtypes, seeds, plant_seeds, checkers):
        case = run_case(*spec)
        out.append(case)
        if on_case is not None:
            on_case(case)
    return out
