"""How each JAX release lays out what ``locate``'s walk (:mod:`._units`) reads: the names of
the unit primitives, the params of the calls, branches and loops it opens, a scan's operands,
and the source info of a custom rule's names and lines.

These are JAX internals. ``tests/program/test_units_internals.py`` patches each away (the
names and params here, :func:`~functional_nn.program._reader.source_line`, :func:`_src`) and
sees a "not opened" row, or a culprit at "unknown line", never a wrong verdict. The walk
reads them from this module at call time.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from functional_nn.program._reader import open_jaxpr

CUSTOM_VJP = ("custom_vjp_call", "custom_vjp_call_jaxpr")
CUSTOM_JVP = ("custom_jvp_call",)
STOP_GRADIENT = ("stop_gradient",)
UNIT_PRIMITIVES = CUSTOM_VJP + CUSTOM_JVP + STOP_GRADIENT

CALL_JAXPR = ("jaxpr", "call_jaxpr")  # jit / pjit, closed_call / core_call
CHECKPOINT_JAXPR = "jaxpr"
COND_BRANCHES = "branches"
WHILE_PARAMS = ("cond_jaxpr", "body_jaxpr", "cond_nconsts", "body_nconsts")
RULE_PARAMS = ("bwd", "fwd_jaxpr_thunk", "jvp_jaxpr_fun", "jvp_jaxpr_thunk")
"""Params that only a custom rule's call has: an equation holding one under a name not in
:data:`CUSTOM_VJP` / :data:`CUSTOM_JVP` is a rule not read (named unopened)."""

SCAN_PARAMS = {"num_consts", "num_carry", "length"}
"""The scan params of jax 0.6 to 0.12.0: operands ``consts, carry, xs`` and outputs ``carry,
ys`` counted by ``num_consts`` and ``num_carry``."""

SCAN_TREES = {"ft_in", "ft_out", "length"}
"""The scan params of jax 0.12.1: operands and outputs described by flat trees, split as
JAX's own ``_scan_impl`` splits them (``ft_in.update(args).unpack()`` gives ``consts, carry,
xs``; ``ft_out.update(outs).unpack()`` gives ``carry, ys``). A scan with neither layout is
not opened (named in ``unopened``)."""


def scan_layout(params) -> tuple[Callable, Callable] | None:
    """``(operands, outputs)``: ``invals -> (consts, carry, xs)`` and ``body outputs ->
    (carry, ys)``, in this release's layout (:data:`SCAN_PARAMS`, :data:`SCAN_TREES`); None
    for a layout not read."""
    if SCAN_PARAMS <= set(params):
        nc, ncarry = params["num_consts"], params["num_carry"]
        return (
            lambda a: (list(a[:nc]), list(a[nc : nc + ncarry]), list(a[nc + ncarry :])),
            lambda o: (list(o[:ncarry]), list(o[ncarry:])),
        )
    if SCAN_TREES <= set(params):
        ft_in, ft_out = params["ft_in"], params["ft_out"]
        try:
            in_groups, out_groups = ft_in.unpack(), ft_out.unpack()
        except AttributeError:  # not the flat trees this reading knows
            return None
        if len(in_groups) != 3 or len(out_groups) != 2:
            return None

        def operands(a):
            consts, carry, xs = (list(g) for g in ft_in.update(list(a)).unpack())
            return consts, carry, xs

        def outputs(o):
            carry, ys = (list(g) for g in ft_out.update(list(o)).unpack())
            return carry, ys

        return operands, outputs
    return None


def looks_like_rule(params) -> bool:
    return any(k in params for k in RULE_PARAMS)


def names(eqn, kind: str) -> tuple[str, str | None]:
    """The custom function's name and where its rule is defined, as JAX's debug info has them
    (``"fn at /path/file.py:12"``); the primitive's name and ``None`` where it says nothing."""
    if kind in ("stop_gradient", "primitive"):
        return eqn.primitive.name, None
    params = eqn.params
    primal = params.get("call_jaxpr", params.get("fun_jaxpr"))
    name, defined = _src(getattr(open_jaxpr(primal), "debug_info", None))
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
