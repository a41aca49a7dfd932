"""What ``check_grad``, ``check_vjp`` and ``check_jvp`` do before they compare anything: the
tree as the engine sees it.

1. **Held leaves** (keys, step counters, integer leaves): checked around, held fixed
   (``_leaves.hold``); the function, its ``pattern`` and the user's derivative see the whole
   tree again.
2. **Finite values**: a check at a ``nan`` point says nothing (``check_finite_leaves``).
3. **One trace** of the function: its output's shapes and dtypes, and the program that the
   low-precision judgement raises to float64.
4. **Complex leaves and outputs** as real pairs, JAX's conventions (``_complex_leaves``).
5. ``k`` and the memory budget read.

Each checker passes what differs: how its derivative is seen through held leaves and through
the complex view (a gradient is a covector of the params, a VJP of the primals with a
cotangent of the outputs, a JVP a map of tangents), and what its function must return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_nn._util._validation import check_finite_leaves, check_int
from functional_nn.checking._complex_leaves import (
    ComplexView,
    complex_outputs,
    complex_view,
    through_view,
)
from functional_nn.checking._leaves import Held, hold, through
from functional_nn.checking._progress import check_budget


class Opening(NamedTuple):
    """The checked function, its tree and derivative, as the engine takes them."""

    fn: Callable
    tree: Any
    given: Callable | None  # the user's derivative, seen through held leaves and complex pairs
    pattern: Callable | None
    held: Held
    view: ComplexView
    program: Any  # the closed jaxpr of the function on the whole (held) tree
    out: Any  # the output's shapes and dtypes, after the complex view
    complex_out: tuple[bool, ...]  # per output leaf: complex
    k: int
    budget: int


def inexact_outputs(where: str) -> Callable[[Any], None]:
    """``check_output`` of a map checker: every output leaf real or complex floating."""

    def check(out):
        for leaf in jax.tree_util.tree_leaves(out):
            if not jnp.issubdtype(leaf.dtype, jnp.inexact):
                raise ValueError(f"{where}: g must return real or complex arrays; got {leaf.dtype}")

    return check


def open_check(
    fn: Callable,
    tree: Any,
    given: Callable | None,
    pattern: Callable | None,
    *,
    where: str,
    name: str,
    k: Any,
    memory_budget: Any,
    through_held: Callable[[Held, Callable], Callable],
    through_pairs: Callable[[ComplexView, Callable, tuple, Any], Callable],
    check_output: Callable[[Any], None],
) -> Opening:
    """Steps 1-5 of the module docstring for ``fn(tree)``, ``name`` the argument ("params",
    "primals"). ``through_held(held, given)`` and ``through_pairs(view, given, complex_out,
    out_tree)`` wrap the user's derivative; ``check_output(out)`` raises for an output the
    checker does not take (before any complex output is made real)."""
    held = hold(tree, where, name)
    if held.paths:  # check the inexact-array leaves, the rest held fixed
        fn, pattern, tree = through(held, fn), through(held, pattern), held.tree
        given = None if given is None else through_held(held, given)
    check_finite_leaves(tree, name, where)
    program, out = jax.make_jaxpr(fn, return_shape=True)(tree)  # one trace: shape, dtypes
    check_output(out)
    complex_out = tuple(complex_outputs(out))
    view = complex_view(tree, where)
    if view.paths or any(complex_out):  # complex leaves as real pairs (Re, Im)
        out_tree = jax.tree_util.tree_structure(out)
        fn, pattern, tree = view.fn(fn), through_view(view, pattern), view.tree
        given = None if given is None else through_pairs(view, given, complex_out, out_tree)
        out = jax.eval_shape(fn, tree)
    k = check_int(k, "k", where)
    budget = check_budget(memory_budget, where)
    return Opening(fn, tree, given, pattern, held, view, program, out, complex_out, k, budget)
