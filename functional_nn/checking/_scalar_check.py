r"""``check_grad`` and ``check_vjp``: every check of the engine, for any function of any pytree.

Research code is not a :class:`~functional_nn.Network`: a layer of its own, a loss, a
``jax.custom_vjp`` rule, a gradient derived by hand. These front doors check it with the
engine that :func:`~functional_nn.check_gradients` uses, and return the same
:class:`~functional_nn.GradCheckReport`, so ``fnn.check_grad(f, p).raise_if_failed()`` is one
line in a test.

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
- **VJPs** (``check_vjp``): the dot-product test :math:`\langle w, J v\rangle =
  \langle \mathrm{vjp}(w), v\rangle` for random cotangents and tangents per leaf, every entry
  of :math:`\mathrm{vjp}(w)` against :math:`w^\top J`, a zero cotangent giving zero, and
  cotangents batched with ``vmap`` equal to the loop.
- **Second order** (``order=2``): Hessian-vector products of the checked gradient,
  ``jax.jvp(grad, (params,), (v,))``, against differences of the gradient along ``v``.
- **Kinks**: ``pattern`` (params -> bool array) marks the steps that change it; those entries
  are left out and reported as ``kink``.

Every program runs with the highest matmul precision, whatever the process default.
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
from functional_nn.checking._comparison import CheckRow, GradCheckReport, leaf_paths, row_within
from functional_nn.checking._directions import (
    host_rng,
    leaf_slices,
    random_leaf_directions,
    unravel_rows,
)
from functional_nn.checking._leaves import (
    Keyed,
    check_floating_leaves,
    check_same_structure,
    flat_float64,
)
from functional_nn.checking._references import (
    best_reference,
    check_dtype,
    custom_primal,
    evaluate_along,
    flatten_function,
    jitted,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE, bar_name, reference_bars
from functional_nn.differences._eps import observed_order
from functional_nn.differences._steps import check_finite_leaves

TAYLOR_BAR = 1.5
"""Slope 2 for a right gradient, 1 for a wrong one: a leaf fails below 1.5."""

TAYLOR_FLOOR = 20
"""Remainders under ``TAYLOR_FLOOR * u * max|f|`` are rounding, not Taylor: left out. The
slope is fit to the (at most 5) smallest steps above it; fewer than 3 give no verdict."""


# -- check_grad ---------------------------------------------------------------------------------


@highest_precision
def check_grad(
    f: Callable[[Any], jax.Array],
    params: Any,
    grad: Callable[[Any], Any] | None = None,
    order: int = 1,
    *,
    pattern: Callable[[Any], jax.Array] | None = None,
    k: int = 16,
    key: jax.Array | None = None,
    taylor: bool = True,
) -> GradCheckReport:
    r"""Check the gradient of a scalar function of any pytree, leaf by leaf.

    Args:
        f: ``params -> scalar`` (real). ``jax.grad(f)`` is checked, every custom rule inside
            it included, unless ``grad`` is given.
        params: any pytree of float32 or float64 arrays (dicts, nested tuples, ...).
        grad: ``params -> pytree like params``, e.g. a hand-derived gradient.
        order: 1, or 2 to also check Hessian-vector products of the gradient,
            ``jax.jvp(grad, (params,), (v,))``, against differences of the gradient along
            ``v`` (complex step where analytic).
        pattern: ``params -> bool array``: an entry whose step changes it has crossed a kink
            (a ReLU's ``z > 0``); it is left out and reported as ``kink``.
        k: random directions per leaf above ``DIRECTIONAL_ABOVE`` parameters (and for the
            second order); key: their PRNG key (default ``jax.random.key(0)``).
        taylor: run the Taylor remainder test (one random direction per leaf).

    Returns:
        :class:`~functional_nn.GradCheckReport`: rows ``grad`` (one per leaf), ``taylor``
        (observed order per leaf) and, for ``order=2``, ``hvp`` (one per leaf).

    >>> import jax.numpy as jnp
    >>> f = lambda p: jnp.sum(jnp.sin(p["w"]) * p["b"])
    >>> p = {"w": jnp.array([0.5, 1.0]), "b": jnp.array(2.0)}
    >>> wrong = lambda p: {"w": jnp.cos(p["w"]), "b": jnp.sum(jnp.sin(p["w"]))}
    >>> [(r.leaf, r.status) for r in check_grad(f, p, grad=wrong, taylor=False).rows]
    [("['b']", 'pass'), ("['w']", 'fail')]
    """
    where = "check_grad"
    dtype = check_dtype(params, where)
    check_finite_leaves(params, "params", where)
    order = check_int(order, "order", where)
    if order not in (1, 2):
        raise ValueError(f"{where}: order must be 1 or 2; got {order}")
    k = check_int(k, "k", where)
    rng = host_rng(0 if key is None else key)
    bars = reference_bars(dtype)
    value = jax.eval_shape(f, params)
    if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(f"{where}: f must return a real scalar; got {value.dtype}{value.shape}"
                         " (use check_vjp for vector functions)")  # fmt: skip
    grad_fn = grad if grad is not None else grad_of(f)
    start = time.perf_counter()
    g = jax.block_until_ready(jitted(grad_fn)(params))
    seconds = time.perf_counter() - start
    check_same_structure(params, g, where, "the gradient")
    check_floating_leaves(g, where)
    flat = flatten_function(f, params)
    g_flat = flat_float64(g)
    pattern_flat = None
    if pattern is not None:

        def pattern_flat(t):
            return jnp.ravel(pattern(flat.unravel(t)))

    primal = custom_primal(f)
    exact = None
    if primal is not None:
        g_primal = flat_float64(jitted(grad_of(primal))(params))

        def exact(d):
            d = np.asarray(d)
            return (g_primal[d] if d.ndim == 1 else d.astype(np.float64) @ g_primal)[:, None]

    slices, paths = leaf_slices(params), leaf_paths(params)
    leaves = jax.tree_util.tree_leaves(params)
    directional = flat.theta.size > DIRECTIONAL_ABOVE
    small = [l for l, (a, b) in enumerate(slices) if not directional or b - a <= k]
    big = [l for l in range(len(slices)) if l not in small]
    groups = []
    if small:
        groups.append((small, np.concatenate([np.arange(*slices[l]) for l in small])))
    if big:
        groups.append((big, random_leaf_directions(params, k, rng, big)))
    rows, name = [], "-"
    for group, directions in groups:
        unit = directions.ndim == 1
        ref = best_reference(flat, directions, bars, (), pattern_flat, pattern, exact)
        name = ref.name
        d = np.asarray(directions)
        cand = g_flat[d] if unit else d.astype(np.float64) @ g_flat
        offset = 0
        for l in group:
            n = slices[l][1] - slices[l][0] if unit else k
            sl, offset = slice(offset, offset + n), offset + n
            shape = jnp.shape(leaves[l]) if unit else (k,)
            excl = None if ref.crossed is None else ref.crossed[sl].reshape(shape)
            rows.append(row_within(
                "grad", paths[l], cand[sl].reshape(shape), ref.value[sl, 0].reshape(shape),
                ref.error[sl, 0].reshape(shape), bars[bar_name(name)], excl, None, ref.evaluations,
                seconds,
            ))  # fmt: skip
    rows.sort(key=lambda r: paths.index(r.leaf))
    if taylor:
        rows += _taylor_rows(flat, params, g_flat, rng, paths, pattern_flat, pattern)
    if order == 2:
        rows += _hvp_rows(grad_fn, params, k, rng, paths, bars)
    description = (
        f"check_grad: P={flat.theta.size}, {len(paths)} leaves, reference {name}, order={order}"
    )
    return GradCheckReport(rows, name, description, dtype)


def grad_of(f: Callable) -> Callable:
    """``jax.grad(f)``, equal for equal ``f``: one compiled program serves every call."""
    return _GradOf(f)


class _GradOf(Keyed):
    """``jax.grad(f)`` with equality by ``f``, so that one jitted program serves every call."""

    def __call__(self, params):
        return jax.grad(self.fn)(params)


def _ladder(dtype) -> np.ndarray:
    """Relative steps of the Taylor test: 0.5 down to :math:`10 \\sqrt u`, 12 points (below,
    the remainder :math:`O(h^2)` sinks under rounding :math:`O(u |f|)` for any curvature)."""
    u = float(jnp.finfo(dtype).eps)
    return np.logspace(np.log10(0.5), np.log10(10 * np.sqrt(u)), 12)


def _taylor_rows(flat, params, g_flat, rng, paths, pattern_flat, pattern):
    r"""The Taylor remainder test along one random direction :math:`v` per leaf.

    Both sides are taken, :math:`r(h) = \max_\pm |f(\theta \pm h v) - f(\theta) \mp h
    \langle g, v\rangle|`: for a right gradient :math:`|C_2| h^2 + |C_3| h^3`, never the
    cancellation of :math:`C_2 h^2` against :math:`C_3 h^3` that one side can show, so the
    slope is 2 (to 3) without a dip; a wrong gradient adds :math:`|\langle \nabla f - g, v
    \rangle| h`, slope 1 at small steps.
    """
    dtype = flat.theta.dtype
    u = float(jnp.finfo(dtype).eps)
    V = random_leaf_directions(params, 1, rng)  # (L, P)
    hs = _ladder(dtype)
    ts = np.concatenate([[0.0], hs, -hs]).astype(dtype)
    scale = np.ones(V.shape[0], dtype)
    start = time.perf_counter()
    values, _, crossed = evaluate_along(flat, V, ts, scale, (), pattern_flat, pattern)
    seconds = time.perf_counter() - start
    f = values[:, :, 0].astype(np.float64)  # (L, 1 + 2K)
    K = hs.size
    slope = V.astype(np.float64) @ g_flat  # (L,)
    rows = []
    for l, path in enumerate(paths):
        plus = np.abs(f[l, 1 : K + 1] - f[l, 0] - hs * slope[l])
        minus = np.abs(f[l, K + 1 :] - f[l, 0] + hs * slope[l])
        r = np.maximum(plus, minus)
        floor = TAYLOR_FLOOR * u * np.abs(f[l]).max()
        keep = r > floor
        kept_h, kept_r = hs[keep][::-1][:5], r[keep][::-1][:5]  # the smallest steps above floor
        order = np.nan
        if kept_h.size >= 3:  # slope of the smallest steps that rounding leaves readable
            order = observed_order(kept_h, kept_r, floor_factor=1.0, ceiling=np.inf)
        if crossed[l]:
            status, error = "kink", 0.0
        elif np.isnan(order):
            status, error = "skip", 0.0  # nothing above the rounding floor: no verdict
        else:
            error = max(0.0, 2.0 - order)
            status = "fail" if order < TAYLOR_BAR else "pass"
        rows.append(CheckRow(
            "taylor", path, (int(keep.sum()),), error, float(r.min(initial=0)), 0.0, (),
            float(order), 2.0, 2.0 - TAYLOR_BAR, status, int(bool(crossed[l])), len(ts), seconds,
        ))  # fmt: skip
    return rows


def _hvp_rows(grad_fn, params, k, rng, paths, bars):
    """Hessian-vector products of the checked gradient against its differences along ``v``."""
    n = min(k, 4)
    flat = flatten_function(grad_fn, params)
    V = random_leaf_directions({"all": flat.theta}, n, rng)  # (n, P)
    start = time.perf_counter()
    hvps = jitted(_HVP(grad_fn))(params, unravel_rows(V, params))
    seconds = time.perf_counter() - start
    cand = np.concatenate([np.asarray(a, np.float64).reshape(n, -1)
                           for a in jax.tree_util.tree_leaves(hvps)], axis=1)  # fmt: skip
    ref = best_reference(flat, V, bars)
    rows = []
    for (a, b), path in zip(leaf_slices(params), paths, strict=True):
        rows.append(row_within(
            "hvp", path, cand[:, a:b], ref.value[:, a:b], ref.error[:, a:b],
            bars[bar_name(ref.name)], None, (n, b - a), ref.evaluations, seconds,
        ))  # fmt: skip
    return rows


class _HVP(Keyed):
    """``v -> jax.jvp(grad, (params,), (v,))[1]``, vmapped over a batch of tangents."""

    def __call__(self, params, tangents):
        return jax.vmap(lambda v: jax.jvp(self.fn, (params,), (v,))[1])(tangents)
