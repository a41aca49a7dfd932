r"""The closed form of a JAX function, read from its program: ``symbolic(fn, *example_args)``.

``jax.make_jaxpr(fn)(*example_args)`` gives the program; each equation is evaluated on SymPy
expressions instead of numbers, entry by entry (an array input is an array of symbols, so a
3-class log-softmax reads as three expressions of three symbols). No float approximation
enters: a constant of the program becomes the exact rational of its float value, and
``log1p`` / ``expm1`` stay themselves (``sympy.codegen.cfunctions``: mpmath evaluates them
without the cancellation of ``log(1 + a)``)
(``sympy.Rational(0.5)`` is ``1/2``; the float32 constant ``0.7978846`` of the tanh form of
``gelu`` is the rational that float32 holds, not :math:`\sqrt{2/\pi}`).

Read: the arithmetic (``add``, ``sub``, ``mul``, ``div``, ``neg``, ``integer_pow``, ``pow``,
``square``, ``sqrt``, ``rsqrt``, ``cbrt``), ``exp``, ``exp2``, ``log``, ``log1p``, ``expm1``,
``tanh``, ``logistic``, trigonometric and hyperbolic functions, ``erf``, ``erfc``, ``abs``,
``sign``, ``floor``, ``ceil``, ``max``, ``min``, ``clamp``, comparisons and the logical
operators, ``select_n`` (``jnp.where``) as ``Piecewise``, ``is_finite`` (true: the symbols are
finite reals), ``stop_gradient`` (its value), the structural primitives (``broadcast_in_dim``,
``reshape``, ``squeeze``, ``expand_dims``, ``transpose``, ``slice``, ``concatenate``,
``reduce_sum``, ``reduce_max``, ``reduce_min``, ``dot_general`` without batch dimensions,
``convert_element_type`` between floating types or from an integer), and the calls whose
program is the function's: ``jit`` (``pjit``), ``custom_jvp_call`` and ``custom_vjp_call``
(their primal: the closed form is the value's, a rule's derivative is not read). Anything else
is a ``ValueError`` that names the primitive and the line that made it.

Symbols are named after ``fn``'s parameters (``x``; entries of an array argument ``x_0``,
``x_1``, ...), real; the closed form is a ``sympy.Expr`` for a scalar output, a
``sympy.Array`` of the output's shape otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import sympy as sp
from jax.extend import core as jcore
from sympy.codegen.cfunctions import expm1, log1p

__all__ = ["symbolic"]


def symbolic(fn: Callable, *example_args: Any) -> sp.Expr | sp.Array:
    """The closed form of ``fn`` at the shapes of ``example_args`` (module docstring).

    >>> import jax
    >>> symbolic(jax.nn.sigmoid, 0.0)
    1/(1 + exp(-x))
    """
    if not example_args:
        raise ValueError("symbolic: give example arguments (their shapes and dtypes are read)")
    names = _parameter_names(fn, len(example_args))
    args = [np.asarray(a) for a in example_args]
    for name, a in zip(names, args, strict=True):
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise ValueError(f"symbolic: argument {name!r} is {a.dtype}; a real number or array "
                             "of them is read")  # fmt: skip
        if a.size > 64:
            raise ValueError(f"symbolic: argument {name!r} has {a.size} entries; the closed "
                             "form of a small function is read (at most 64 each)")  # fmt: skip
    closed = jax.make_jaxpr(fn)(*example_args)
    values = [_symbols(name, a.shape) for name, a in zip(names, args, strict=True)]
    outs = _run(closed.jaxpr, closed.consts, values)
    if len(outs) != 1:
        raise ValueError(f"symbolic: fn returns {len(outs)} arrays; one is read")
    out = outs[0]
    if out.shape == ():
        return _expr(out[()])
    return sp.Array(np.vectorize(_expr, otypes=[object])(out).tolist())


def _parameter_names(fn: Callable, n: int) -> list[str]:
    try:
        params = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        params = []
    if len(params) < n or len(set(params[:n])) < n:
        return ["x"] if n == 1 else [f"x{i}" for i in range(n)]
    return params[:n]


def _symbols(name: str, shape: tuple) -> np.ndarray:
    if shape == ():
        return np.array(sp.Symbol(name, real=True), dtype=object)
    flat = [sp.Symbol(f"{name}_{i}", real=True) for i in range(int(np.prod(shape)))]
    return np.array(flat, dtype=object).reshape(shape)


def _expr(v) -> sp.Basic:
    return v if isinstance(v, sp.Basic) else sp.sympify(v)


def _exact(a) -> np.ndarray:
    """A constant of the program as exact SymPy numbers (the rational of each float)."""
    a = np.asarray(a)
    if a.dtype == bool:
        return np.vectorize(lambda v: sp.true if v else sp.false, otypes=[object])(a)
    if np.issubdtype(a.dtype, np.integer):
        return np.vectorize(lambda v: sp.Integer(int(v)), otypes=[object])(a)
    if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16":

        def rational(v):
            v = float(v)
            if not np.isfinite(v):
                return sp.oo if v > 0 else (-sp.oo if v < 0 else sp.nan)
            return sp.Rational(v)

        return np.vectorize(rational, otypes=[object])(a.astype(np.float64))
    raise ValueError(f"symbolic: a constant of dtype {a.dtype} is not read")


def _run(jaxpr, consts, args) -> list[np.ndarray]:
    env: dict = {}

    def read(v):
        if isinstance(v, jcore.Literal):
            return _exact(v.val)
        return env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = _exact(c)
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars])
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = np.asarray(o, dtype=object).reshape(v.aval.shape)
    return [read(v) for v in jaxpr.outvars]


def _sub(j):
    """A sub-program of an equation's params, as ``(jaxpr, consts)``."""
    if hasattr(j, "jaxpr") and hasattr(j, "consts"):
        return j.jaxpr, j.consts
    return j, []


def _logistic(x):
    return 1 / (1 + sp.exp(-x))


def _piecewise(which, *cases):
    which = _expr(which)
    if which in (sp.true, sp.false):
        return cases[int(which == sp.true)]
    if len(cases) == 2:
        return sp.Piecewise((cases[1], which), (cases[0], True))
    return sp.Piecewise(*((c, sp.Eq(which, i)) for i, c in enumerate(cases[:-1])),
                        (cases[-1], True))  # fmt: skip


ELEMENTWISE: dict[str, Callable] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "neg": lambda a: -a,
    "pow": lambda a, b: a**b,
    "square": lambda a: a**2,
    "sqrt": sp.sqrt,
    "rsqrt": lambda a: 1 / sp.sqrt(a),
    "cbrt": lambda a: sp.real_root(a, 3),
    "exp": sp.exp,
    "exp2": lambda a: 2**a,
    "log": sp.log,
    "log1p": log1p,  # kept as log1p (SymPy's codegen function): exact where 1 + a rounds
    "expm1": expm1,
    "tanh": sp.tanh,
    "sinh": sp.sinh,
    "cosh": sp.cosh,
    "logistic": _logistic,
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "asin": sp.asin,
    "acos": sp.acos,
    "atan": sp.atan,
    "atan2": sp.atan2,
    "asinh": sp.asinh,
    "acosh": sp.acosh,
    "atanh": sp.atanh,
    "erf": sp.erf,
    "erfc": sp.erfc,
    "abs": sp.Abs,
    "sign": sp.sign,
    "floor": sp.floor,
    "ceil": sp.ceiling,
    "max": sp.Max,
    "min": sp.Min,
    "clamp": lambda lo, x, hi: sp.Min(sp.Max(x, lo), hi),
    "lt": sp.Lt,
    "le": sp.Le,
    "gt": sp.Gt,
    "ge": sp.Ge,
    "eq": sp.Eq,
    "ne": sp.Ne,
    "and": sp.And,
    "or": sp.Or,
    "not": sp.Not,
    "select_n": _piecewise,
    "is_finite": lambda a: sp.true,
    "stop_gradient": lambda a: a,
    "copy": lambda a: a,
    "copy_p": lambda a: a,
    "optimization_barrier": lambda a: a,
}
"""Primitives applied entry by entry (operands broadcast as the program has them)."""

CALLS = ("pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
         "custom_vjp_call_jaxpr", "remat2", "checkpoint")  # fmt: skip
"""Primitives whose closed form is their sub-program's (a custom rule's primal)."""


def _apply(eqn, invals: list[np.ndarray]) -> list:
    name, params = eqn.primitive.name, eqn.params
    if name in ELEMENTWISE:
        f = np.frompyfunc(ELEMENTWISE[name], len(invals), 1)
        return [f(*invals) if invals else ELEMENTWISE[name]()]
    if name == "integer_pow":
        return [np.frompyfunc(lambda a: a ** params["y"], 1, 1)(invals[0])]
    if name in CALLS:
        sub = next((params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in params), None)
        if sub is None:
            raise ValueError(f"symbolic: {name} at {_line(eqn)}: its program is not read here")
        jaxpr, consts = _sub(sub)
        return _run(jaxpr, consts, invals[len(invals) - len(jaxpr.invars) :])
    if name in STRUCTURAL:
        return [STRUCTURAL[name](params, *invals)]
    if name == "convert_element_type":
        source = eqn.invars[0].aval.dtype
        target = np.dtype(params["new_dtype"])
        if np.issubdtype(target, np.floating) or target.name == "bfloat16":
            if np.issubdtype(source, np.floating) or np.issubdtype(source, np.integer):
                return [invals[0]]
        if target == source:
            return [invals[0]]
        raise ValueError(f"symbolic: convert_element_type from {source} to {target} at "
                         f"{_line(eqn)} (a rounding) has no closed form here")  # fmt: skip
    raise ValueError(f"symbolic: the primitive {name!r} at {_line(eqn)} has no closed form "
                     f"here; read: {', '.join(sorted(ELEMENTWISE) + ['integer_pow'])}, "
                     f"{', '.join(sorted(STRUCTURAL))}, convert_element_type and the calls "
                     f"{', '.join(CALLS)}")  # fmt: skip


def _line(eqn) -> str:
    from functional_nn.program import source_line

    return source_line(eqn)


def _broadcast_in_dim(params, x):
    shape, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])
    expanded = np.reshape(
        x, [x.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))]
    )
    return np.broadcast_to(expanded, shape)


def _reduce(op):
    def reduce(params, x):
        out = x
        for axis in sorted(params["axes"], reverse=True):
            out = np.frompyfunc(op, 2, 1).reduce(out, axis=axis)
        return np.asarray(out, dtype=object)

    return reduce


def _slice(params, x):
    starts, limits = params["start_indices"], params["limit_indices"]
    strides = params.get("strides") or (1,) * len(starts)
    return x[tuple(slice(a, b, s) for a, b, s in zip(starts, limits, strides, strict=True))]


def _dot_general(params, a, b):
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    if lb or rb:
        raise ValueError("symbolic: dot_general with batch dimensions is not read")
    return np.tensordot(a, b, axes=(tuple(lc), tuple(rc)))


def _squeeze(params, x):
    return np.squeeze(x, axis=tuple(params["dimensions"]))


STRUCTURAL: dict[str, Callable] = {
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": lambda params, x: np.reshape(x, tuple(params["new_sizes"])),
    "squeeze": _squeeze,
    "expand_dims": lambda params, x: np.expand_dims(x, tuple(params["dimensions"])),
    "transpose": lambda params, x: np.transpose(x, tuple(params["permutation"])),
    "slice": _slice,
    "concatenate": lambda params, *xs: np.concatenate(xs, axis=params["dimension"]),
    "reduce_sum": _reduce(lambda a, b: a + b),
    "reduce_max": _reduce(sp.Max),
    "reduce_min": _reduce(sp.Min),
    "dot_general": _dot_general,
}
"""Primitives that move, gather or reduce entries: ``params, *operands -> array``."""
