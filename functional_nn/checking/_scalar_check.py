r"""``check_grad``: every check of the engine, for a scalar function of any pytree.

Research code is not a :class:`~functional_nn.Network`: a layer of its own, a loss, a
``jax.custom_vjp`` rule, a gradient derived by hand. These front doors check it with the
engine that :func:`~functional_nn.check_gradients` uses, and return its report:
``fnn.check_grad(f, p).raise_if_failed()`` is one line in a test.

- **Per leaf, always.** Every verdict is a row per leaf of ``params``: a wrong leaf is named,
  and a small leaf is not swamped by a large one. Up to
  :data:`~functional_nn.checking.DIRECTIONAL_ABOVE` parameters every entry is compared;
  above, ``k`` random directions are drawn per leaf (every entry of a leaf of at most ``k``).
- **References, most exact first** (:mod:`functional_nn.checking._references`): autodiff of
  the primal of a top-level custom rule; the complex step where ``f`` is analytic, validated against
  central differences along a direction; Richardson central differences, whose own error
  bar is added to the tolerance entry by entry (so float32 has no false failures).
- **The Taylor remainder test** (``check_grad``): along a random direction :math:`v` per leaf,
  :math:`r(h) = |f(\theta + h v) - f(\theta) - h \langle g, v \rangle|` over a ladder of steps
  chosen from the dtype, points under the rounding floor dropped: a right gradient gives
  slope 2, a wrong one slope 1 (:func:`~functional_nn.observed_order`). It needs no step
  size; the entry comparison stands beside it, since one random direction can miss a 5%
  error in one entry.
- **Sharded leaves** (split over devices or processes): checked where they live, never
  gathered (:mod:`~functional_nn.checking._sharded_check`). ``check_vjp``: ``_vjp_check.py``.
- **Second order** (``order=2``): Hessian-vector products of the checked gradient,
  ``jax.jvp(grad, (params,), (v,))``, against differences of the gradient along ``v``.
- **Kinks**: ``pattern`` (params -> bool array) marks the steps that change it; those entries
  are left out and reported as ``kink``. Every program runs with the highest matmul precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import highest_precision
from functional_nn._util._validation import check_int
from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    TaylorLadder,
    leaf_paths,
    n_leaves,
    row_within,
)
from functional_nn.checking._complex_leaves import view_note
from functional_nn.checking._directions import seed_words
from functional_nn.checking._leaves import (
    Keyed,
    check_floating_leaves,
    check_same_structure,
    held_note,
)
from functional_nn.checking._on_failure import locating
from functional_nn.checking._opening import open_check
from functional_nn.checking._precision_check import Judged, low_precision, rejudge, within_spread
from functional_nn.checking._progress import Progress, Tracker
from functional_nn.checking._references import (
    Directions,
    LeafReferences,
    check_dtype,
    custom_primal,
    failing,
    jitted,
    reference_name,
    refused_note,
)
from functional_nn.checking._screen import screen_grad, screen_note, screening
from functional_nn.checking._sharded_check import is_sharded, sharded_check_grad
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE, bar_name, reference_bars
from functional_nn.differences._blocks import LeafFunction
from functional_nn.differences._eps import observed_order, order_points
from functional_nn.differences._estimates import crossed_kink, richardson_ladder


def _held_gradient(where: str):
    def wrap(held, grad_user):
        return lambda p: held.pick(grad_user(held.fill(p)), "the gradient", where)

    return wrap


def _paired_gradient(where: str):
    def wrap(view, grad_given, complex_out, out_tree):
        return lambda p: view.covector(grad_given(view.of(p)), "the gradient", where)

    return wrap


def _scalar(where: str):
    def check(value):
        if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise ValueError(f"{where}: f must return a real scalar; got {value.dtype}"
                             f"{value.shape} (for vector or complex functions: check_vjp for "
                             "reverse mode, check_jvp for forward)")  # fmt: skip

    return check


TAYLOR_BAR = 1.5
"""Slope 2 for a right gradient, 1 for a wrong one: a leaf fails below 1.5."""

TAYLOR_FLOOR = 20
"""Remainders under ``TAYLOR_FLOOR * u * max|f|`` are rounding, not Taylor: left out; the
slope is fit to the (at most 5) smallest steps above it (fewer than 3: no verdict)."""

JUMP_BELOW = 0.8
"""A Taylor slope below this (right: 2, wrong: 1) is no remainder: the ladder crossed a jump."""


@locating("grad")
@highest_precision
def check_grad(
    f: Callable[[Any], jax.Array],
    params: Any,
    grad: Callable[[Any], Any] | None = None,
    order: int = 1,
    *,
    pattern: Callable[[Any], jax.Array] | None = None,
    k: int = 4,
    key: jax.Array | None = None,
    taylor: bool = True,
    memory_budget: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    screen: bool | None = None,
    baseline: Callable[[Any], jax.Array] | None = None,
    locate: bool = True,  # read by @locating, which runs locate when the check fails
) -> GradCheckReport:
    r"""Check the gradient of a scalar function of any pytree, leaf by leaf.

    Args:
        f: ``params -> scalar`` (real). ``jax.grad(f)`` is checked, every custom rule inside
            it included, unless ``grad`` is given.
        params: any pytree (dicts, nested tuples, an Equinox module, ...): its float32,
            float64, complex64 and complex128 array leaves are checked, every other leaf (a
            function, an integer or bool array, a PRNG key, a Python number) is held fixed
            and named in the report's description. A complex leaf is checked as its real
            pair (Re, Im) in a last axis of 2 (:mod:`~functional_nn.checking._complex_leaves`).
        grad: ``params -> pytree like params``, e.g. a hand-derived gradient (anything,
            ``None`` included, at the held leaves); at a complex leaf, JAX's convention
            :math:`\partial f / \partial x - \mathrm{i}\, \partial f / \partial y`.
        order: 1, or 2 to also check Hessian-vector products of the gradient,
            ``jax.jvp(grad, (params,), (v,))``, against differences of the gradient along
            ``v`` (complex step where analytic).
        pattern: ``params -> bool array``: an entry whose step changes it has crossed a kink
            (a ReLU's ``z > 0``); it is left out and reported as ``kink``.
        k: random directions per leaf for leaves of more than ``k`` entries in a tree of more
            than ``DIRECTIONAL_ABOVE`` parameters (and for the second order); every entry is
            compared otherwise. key: their PRNG key (default ``jax.random.key(0)``). A
            whole-leaf bug (a scale, a sign, a transpose, a zeroed leaf) shows along any
            direction; ``k`` more directions make a partial one likelier to show.
        taylor: run the Taylor remainder test (one random direction per leaf).
        memory_budget: bytes one batch of evaluations of ``f`` may use (default 256 MiB):
            a leaf's points are evaluated in chunks of that size.
        callback: called with a :class:`Progress` after every batch of evaluations (the
            library prints nothing; ``scripts/`` show it with rich).
        screen: test the leaves in groups first, along directions that move a whole group,
            with ``f`` evaluated in float64, and check leaf by leaf only the leaves of the
            groups that fail (:mod:`~functional_nn.checking._screen`). ``None`` (the
            default): above :data:`~functional_nn.checking._screen.SCREEN_ABOVE` parameters
            in 4 leaves or more; ``True``: any tree. Either way only where ``f`` evaluates in
            float64 as itself, with no ``pattern``, no custom rule at the top and no complex
            leaf (the description says why not, when ``True`` was asked for); ``False``:
            leaf by leaf. A leaf passing in a group gets its group's ``grad`` row, no Taylor.
        baseline: ``params -> scalar``, a plain implementation of the same function (the
            attention a fused kernel replaces): a leaf passes with at most twice the error of
            the baseline's gradient (:mod:`~functional_nn.checking._precision_check`).
        locate: when the check fails, :func:`~functional_nn.locate` names the rule inside
            ``f`` whose derivative is wrong (``report.located``; not with ``grad=``).

    Low precision: bfloat16 or float16 parameters, a program computing below its parameters'
    precision (a bfloat16 forward of float32 ones), or a ``baseline``, are judged against the
    same program in float64 (:func:`~functional_nn.promote`), differenced in float64; a leaf
    fails only beyond what the program's own rounding explains (no Taylor row, no screen,
    ``order=1``); a program that cannot be raised is refused there, with the reason. A float32
    leaf that fails is judged so again before it fails (its steps may cross a ReLU kink).

    Returns:
        :class:`~functional_nn.GradCheckReport`: rows ``grad`` (one per leaf), ``taylor``
        (observed order per leaf) and, for ``order=2``, ``hvp`` (one per leaf). A leaf's
        ``evaluations`` are the evaluations of ``f`` its row took (the ladder of the Taylor
        row also validates the complex step of the ``grad`` row).

    Cost: screened, 8 evaluations per group of up to 64 leaves, in float64, and about 8 more
    per halving toward a wrong leaf. Leaf by leaf: ``2 * 8`` evaluations for the ladder, and
    one per entry for the complex step (trees up to ``DIRECTIONAL_ABOVE`` parameters), or
    four per random direction for Richardson central differences (above): ``16 + 4 k`` per
    leaf at research scale, and 32 more for a leaf they do not resolve (the noise of ``f``
    and two more rungs). It grows with leaves and the cost of ``f``, never leaves x parameters.

    >>> import jax.numpy as jnp
    >>> f = lambda p: jnp.sum(jnp.sin(p["w"]) * p["b"])
    >>> p = {"w": jnp.array([0.5, 1.0]), "b": jnp.array(2.0)}
    >>> wrong = lambda p: {"w": jnp.cos(p["w"]), "b": jnp.sum(jnp.sin(p["w"]))}
    >>> [(r.leaf, r.status) for r in check_grad(f, p, grad=wrong, taylor=False).rows]
    [("['b']", 'pass'), ("['w']", 'fail')]
    """
    where = "check_grad"
    if is_sharded(params):  # leaves split over devices or processes: never gathered
        return sharded_check_grad(f, params, grad, k, key, where, pattern=pattern,
                                  order=order, baseline=baseline)  # fmt: skip
    order = check_int(order, "order", where)
    if order not in (1, 2):
        raise ValueError(f"{where}: order must be 1 or 2; got {order}")
    o = open_check(
        f,
        params,
        grad,
        pattern,
        where=where,
        name="params",
        k=k,
        memory_budget=memory_budget,
        through_held=_held_gradient(where),
        through_pairs=_paired_gradient(where),
        check_output=_scalar(where),
    )
    f, params, grad, pattern = o.fn, o.tree, o.given, o.pattern
    held, view, program, k, budget = o.held, o.view, o.program, o.k, o.budget
    opts = dict(pattern=pattern, k=k, key=key, budget=budget, callback=callback)
    low = low_precision(f, params, grad, baseline, view, order, grad_of, program, **opts)
    if low is not None:  # a program in low precision: against itself in float64
        low.description += view_note(view) + held_note(held)
        return low
    dtype = check_dtype(params, where)
    seed = seed_words(0 if key is None else key)
    grad_fn = grad if grad is not None else grad_of(f)
    start = time.perf_counter()
    g = jax.block_until_ready(jitted(grad_fn)(params))
    seconds = time.perf_counter() - start
    check_same_structure(params, g, where, "the gradient")
    check_floating_leaves(g, where)
    g_leaves = jax.tree_util.tree_leaves(g)
    paths = leaf_paths(params)
    tracker = Tracker(callback, paths)
    lf = LeafFunction(
        lambda p: f(p), params, (), None if pattern is None else (lambda p: pattern(p)),
        budget, tracker,
    )  # fmt: skip
    exact = None
    primal = custom_primal(f)
    if primal is not None:
        g_primal = jax.tree_util.tree_leaves(jitted(grad_of(primal))(params))

        def exact(l, d):
            return d.along(g_primal[l])[:, None]

    P = sum(int(np.size(a)) for a in lf.leaves)
    refs = LeafReferences(lf, dtype, seed, exact, complex_blocks=P <= DIRECTIONAL_ABOVE)
    bars = reference_bars(refs.dtype)
    screens = pattern is None and primal is None and not view.paths
    screens = screens and screening(screen, P, len(paths))
    f0 = np.asarray(lf.flat(jitted(f)(params)), np.float64)[0] if taylor or screens else None
    rows, taylor_rows, names, ladders, judged = {}, [], [], {}, {}
    screened = None
    if screens:
        screened = screen_grad(f, params, f0, g_leaves, dtype, seed, paths, tracker)
    if screened is not None:
        rows.update(screened.rows)
        names += ["central (float64)"] * bool(screened.rows)
    for l, path in enumerate(paths):
        if screened is not None and l not in screened.suspects:
            continue
        tracker.leaf(l)
        size, shape = int(np.size(lf.leaves[l])), tuple(jnp.shape(lf.leaves[l]))
        unit = P <= DIRECTIONAL_ABOVE or size <= k
        d = Directions(index=np.arange(size)) if unit else refs.random(l, k)
        if taylor:
            refs.ladder(l)  # the Taylor row's evaluations, shared with the validation
        before = lf.evaluations
        ref = refs.reference(l, d)
        cand, cand_err = d.along(g_leaves[l]), d.rounding(g_leaves[l])
        keep = None if ref.crossed is None else ~ref.crossed
        tol = bars[bar_name(ref.name)]
        bad = failing(cand, ref.value[:, 0], ref.error[:, 0] + cand_err, tol, keep)
        ref = refs.confirm(l, d, ref, bad)
        names.append(ref.name)
        out_shape = shape if unit else (k,)
        excl = None if ref.crossed is None else ref.crossed.reshape(out_shape)
        judged[l] = Judged(path, d, cand, ref, ref.error[:, 0] + cand_err, tol, out_shape, excl,
                           lf.evaluations - before, seconds)  # fmt: skip
        rows[l] = row_within(
            "grad", path, cand.reshape(out_shape), ref.value[:, 0].reshape(out_shape),
            judged[l].err.reshape(out_shape), tol, excl, None, lf.evaluations - before, seconds,
        )  # fmt: skip
        if taylor:
            row, ladders[path] = _taylor_row(refs, l, path, f0, g_leaves[l])
            taylor_rows.append(row)
    spread_note = ""
    if refs.dtype == "float64" and not view.paths:  # rounding of sums that cancel
        rows, spread_note = within_spread(rows, judged, jitted(grad_fn), params, g_leaves,
                                          refs.dtype, key)  # fmt: skip
    if order == 2:
        taylor_rows += _hvp_rows(grad_fn, params, k, (*seed, 2), paths, budget)
    name = reference_name(names)
    description = (
        f"check_grad: P={P}, {n_leaves(len(paths))}, reference {name}, order={order}, "
        f"{lf.evaluations} evaluations"
    )
    if screened is not None:
        description += screen_note(screened, paths)
    elif screen:  # asked for and not possible: say why
        why = ("a pattern" if pattern is not None else "a custom rule at the top"
               if primal is not None else "complex leaves" if view.paths
               else "f does not evaluate in float64 as itself")  # fmt: skip
        description += f"; screen not used: {why}"
    description += spread_note + refused_note(lf, paths) + view_note(view) + held_note(held)
    rows = [rows[l] for l in sorted(rows)]
    report = GradCheckReport(rows + taylor_rows, name, description, view.dtype or dtype, ladders)
    if refs.dtype == "float32" and not view.paths and order == 1 and not report.ok:
        return rejudge(f, params, grad_fn, report, pattern=pattern, k=k, key=key, budget=budget)
    return report


def grad_of(f: Callable) -> Callable:
    """``jax.grad(f)``, equal for equal ``f``: one compiled program serves every call."""
    return _GradOf(f)


class _GradOf(Keyed):
    """``jax.grad(f)`` with equality by ``f``, so that one jitted program serves every call."""

    def __call__(self, params):
        return jax.grad(self.fn)(params)


def _taylor_row(refs: LeafReferences, l: int, path: str, f0: float, g_leaf):
    r"""The Taylor remainder test along the ladder's random direction :math:`v` of leaf ``l``:
    its row and its :class:`~functional_nn.checking._comparison.TaylorLadder`.

    Both sides are taken, :math:`r(h) = \max_\pm |f(\theta \pm h v) - f(\theta) \mp h
    \langle g, v\rangle|`: for a right gradient :math:`|C_2| h^2 + |C_3| h^3`, never the
    cancellation of :math:`C_2 h^2` against :math:`C_3 h^3` that one side can show, so the
    slope is 2 (to 3) without a dip; a wrong gradient adds :math:`|\langle \nabla f - g, v
    \rangle| h`, slope 1 at small steps. A slope below :data:`JUMP_BELOW` is neither: the
    remainder does not shrink with the step, so the ladder crossed a jump of ``f`` (``floor``,
    ``round``): the row is a ``kink``, as with a ``pattern``; so is a ladder whose smallest
    steps cross a kink (a ReLU unit near its kink: slope 1 from the slope jump, which the
    second differences show, :func:`~functional_nn.differences._estimates.crossed_kink`).
    """
    start = time.perf_counter()
    lad = refs.ladder(l)
    seconds = time.perf_counter() - start
    u = refs.u
    hs = lad.hs
    f = np.concatenate([[f0], lad.plus[:, 0].real, lad.minus[:, 0].real])
    slope = float(lad.v.along(g_leaf)[0])
    plus = np.abs(lad.plus[:, 0].real - f0 - hs * slope)
    minus = np.abs(lad.minus[:, 0].real - f0 + hs * slope)
    r = np.maximum(plus, minus)
    floor = TAYLOR_FLOOR * u * np.abs(f).max()
    keep = r > floor
    kept = np.flatnonzero(keep)[::-1][:5]  # the smallest steps above floor
    order, fit = np.nan, np.zeros(hs.shape, bool)
    if kept.size >= 3:  # slope of the smallest steps that rounding leaves readable
        order = observed_order(hs[kept], r[kept], floor_factor=1.0, ceiling=np.inf)
        fit[kept[order_points(hs[kept], r[kept], floor_factor=1.0, ceiling=np.inf)]] = True
    # the ladder resolves f along v when its central differences show the h^2 law somewhere
    # (f varying faster than the smallest step, sin(sinh(x)) at x = 5 in float32, never does)
    _, bar = richardson_ladder(lad.plus[:, :1].real, lad.minus[:, :1].real, hs, u)
    # a kink crossed by the smallest steps: the second difference grows like h (a wrong
    # gradient leaves it at h^2), and the remainder's slope 1 is the kink's, not g's
    smallest = np.sort(kept)[-3:]
    kinked = smallest.size == 3 and bool(crossed_kink(
        lad.plus[smallest, :1].real, lad.minus[smallest, :1].real, np.array([f0]),
        hs[smallest], u))  # fmt: skip
    if lad.crossed or kinked or (not np.isnan(order) and order < JUMP_BELOW):
        status, error = "kink", 0.0
    elif np.isnan(order) or not np.isfinite(bar[0]):
        status, error = "skip", 0.0  # nothing above the rounding floor, or unresolved: no verdict
    else:
        error = max(0.0, 2.0 - order)
        status = "fail" if order < TAYLOR_BAR else "pass"
    row = CheckRow(
        "taylor", path, (int(keep.sum()),), error, float(r.min(initial=0)), 0.0, (),
        float(order), 2.0, 2.0 - TAYLOR_BAR, status, int(status == "kink"), lad.evaluations,
        seconds,
    )  # fmt: skip
    return row, TaylorLadder(hs, r, float(floor), fit, float(order), status)


def _hvp_rows(grad_fn, params, k, seed, paths, budget):
    """Hessian-vector products of the checked gradient against its differences, along
    ``min(k, 4)`` random directions in each leaf (one row per leaf moved; the products are
    the whole gradient's size, so order 2 brings them to the host)."""
    n = min(k, 4)
    lf = LeafFunction(lambda p: grad_fn(p), params, (), None, budget)
    refs = LeafReferences(lf, jnp.dtype(jnp.result_type(*lf.leaves)).name, seed)
    bars = reference_bars(refs.dtype)
    rows = []
    for l, path in enumerate(paths):
        d = refs.random(l, n)
        start = time.perf_counter()
        hvps = _hvp(grad_fn, params, l, jnp.asarray(d.blocks))
        seconds = time.perf_counter() - start
        cand = np.concatenate([np.asarray(a, np.float64).reshape(n, -1)
                               for a in jax.tree_util.tree_leaves(hvps)], axis=1)  # fmt: skip
        before = lf.evaluations
        ref = refs.reference(l, d)
        rows.append(row_within(
            "hvp", path, cand, ref.value, ref.error, bars[bar_name(ref.name)], None,
            (n, cand.shape[1]), lf.evaluations - before, seconds,
        ))  # fmt: skip
    return rows


def _hvp(grad_fn, params, l, V):
    """``jax.jvp(grad, (params,), (t,))`` for tangents ``t`` zero but in leaf ``l``, which
    holds a row of ``V``: only that leaf is batched."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    zeros = [jnp.zeros_like(a) for a in leaves]

    def one(v):
        t = list(zeros)
        t[l] = v
        return jax.jvp(grad_fn, (params,), (jax.tree_util.tree_unflatten(treedef, t),))[1]

    return jax.vmap(one)(V)
