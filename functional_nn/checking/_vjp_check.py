r"""``check_vjp``: the vector-Jacobian products of any function of any pytree, leaf by leaf.

For ``g: primals -> outputs`` (pytrees of arrays) with Jacobian :math:`J`, a VJP maps a
cotangent :math:`w` (shaped like the outputs) to :math:`w^\top J` (shaped like the primals).
Four checks, each a row per primal leaf of the :class:`~functional_nn.GradCheckReport`:

- ``vjp``: every entry of :math:`\mathrm{vjp}(w)` against :math:`w^\top J` for ``k`` random
  cotangents, :math:`J` from the most exact reference
  (:mod:`functional_nn.checking._references`), up to
  :data:`~functional_nn.checking.DIRECTIONAL_ABOVE` primal entries;
- ``dot-product``: :math:`\langle w, J v \rangle = \langle \mathrm{vjp}(w), v \rangle` for
  random tangents :math:`v` drawn per leaf, :math:`J v` from the complex step, central
  differences or ``jax.jvp`` of a custom rule's primal; the error is measured against
  :math:`\max(\|w\| \|J v\|, \|\mathrm{vjp}(w)\| \|v\|)`, so that a product that cancels to
  nearly zero does not fail a right rule;
- ``zero cotangent``: :math:`\mathrm{vjp}(0) = 0` exactly;
- ``vmap``: cotangents batched with :func:`jax.vmap` give the loop's products.

A rule that is right only for a cotangent of ones fails the first two.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import highest_precision
from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    compare_leaf,
    leaf_paths,
    leaf_row,
    row_within,
)
from functional_nn.checking._complex_leaves import (
    output_cotangent,
    view_note,
)
from functional_nn.checking._directions import host_rng, seed_words
from functional_nn.checking._leaves import (
    Keyed,
    check_floating_leaves,
    check_same_structure,
    held_note,
)
from functional_nn.checking._on_failure import locating
from functional_nn.checking._opening import inexact_outputs, open_check
from functional_nn.checking._precision_check import (
    NUDGES,
    SPREAD_FACTOR,
    judged_again,
    nudged,
)
from functional_nn.checking._precision_maps import low_precision_map
from functional_nn.checking._progress import Progress, Tracker
from functional_nn.checking._references import (
    Directions,
    LeafReferences,
    check_dtype,
    exact_jvps,
    failing,
    jitted,
    reference_name,
    refused_note,
)
from functional_nn.checking._sharded_check import is_sharded, sharded_check_map
from functional_nn.checking._tolerances import (
    DIRECTIONAL_ABOVE,
    FULL_JACOBIAN_UP_TO,
    bar_name,
    reference_bars,
)
from functional_nn.differences._blocks import LeafFunction
from functional_nn.differences._estimates import ROUNDING


def _held_vjp(where: str):
    def wrap(held, vjp_user):
        return lambda p, ct: held.pick(vjp_user(held.fill(p), ct), "the VJP", where)

    return wrap


def _paired_vjp(where: str):
    def wrap(view, vjp_given, complex_out, out_tree):
        def vjp(p, ct):
            ct = output_cotangent(ct, complex_out, out_tree)
            return view.covector(vjp_given(view.of(p), ct), "the VJP", where)

        return vjp

    return wrap


@locating("vjp")
@highest_precision
def check_vjp(
    g: Callable[[Any], Any],
    primals: Any,
    vjp: Callable[[Any, Any], Any] | None = None,
    *,
    k: int = 3,
    key: jax.Array | None = None,
    pattern: Callable[[Any], jax.Array] | None = None,
    memory_budget: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    locate: bool = True,  # read by @locating, which runs locate when the check fails
) -> GradCheckReport:
    r"""Check the VJP of any function of any pytree against its Jacobian, leaf by leaf.

    Args:
        g: ``primals -> outputs``, pytrees of real or complex arrays. ``jax.vjp(g)`` is
            checked, every
            custom rule inside included, unless ``vjp`` is given.
        primals: any pytree: its inexact array leaves are checked (complex ones as real pairs
            (Re, Im), :mod:`~functional_nn.checking._complex_leaves`), every other
            leaf held fixed and named in the report's description (as in ``check_grad``).
        vjp: ``vjp(primals, cotangents) -> like primals``, ``cotangents`` shaped like the
            outputs.
        k: random cotangents (and tangents per leaf); key: their PRNG key.
        pattern: ``primals -> bool array``: steps that change it crossed a kink; those
            entries (``vjp``) and tangents (``dot-product``) are left out and reported.
        memory_budget: bytes one batch of evaluations of ``g`` may use (default 256 MiB).
        callback: called with a :class:`~functional_nn.checking._progress.Progress` after
            every batch of evaluations.
        locate: when the check fails, :func:`~functional_nn.locate` names the rule inside
            ``g`` whose derivative is wrong, along a random cotangent (``report.located``).

    A program in bfloat16 or float16, or computing below its primals' precision, is judged
    against itself raised to float64: one ``vjp`` row per leaf, failing only beyond the
    program's own rounding (:mod:`~functional_nn.checking._precision_maps`).

    Returns:
        :class:`~functional_nn.GradCheckReport` with rows ``vjp``, ``dot-product``,
        ``zero cotangent`` and ``vmap`` per primal leaf.

    >>> import jax.numpy as jnp
    >>> g = lambda p: {"y": jnp.sin(p["x"]) * p["a"]}
    >>> p = {"a": jnp.array(2.0), "x": jnp.array([0.5, 1.0, 1.5])}
    >>> check_vjp(g, p).ok
    True
    """
    where = "check_vjp"
    if is_sharded(primals):  # split over devices or processes: never gathered
        if pattern is not None:
            raise ValueError(f"{where}: pattern= is not taken when leaves are sharded")
        return sharded_check_map("vjp", g, primals, vjp, k, key, where)
    o = open_check(
        g,
        primals,
        vjp,
        pattern,
        where=where,
        name="primals",
        k=k,
        memory_budget=memory_budget,
        through_held=_held_vjp(where),
        through_pairs=_paired_vjp(where),
        check_output=inexact_outputs(where),
    )
    g, primals, vjp, pattern = o.fn, o.tree, o.given, o.pattern
    held, view, program, out, k, budget = o.held, o.view, o.program, o.out, o.k, o.budget
    complex_out = o.complex_out
    # low precision (or a program computing below its parameters'): against float64
    opts = dict(k=k, key=key, pattern=pattern, budget=budget, callback=callback)
    low = low_precision_map("vjp", g, primals, vjp, where=where, closed=program, **opts)
    if low is not None:
        low.description += view_note(view, any(complex_out)) + held_note(held)
        return low
    dtype = check_dtype(primals, where)
    seed = seed_words(0 if key is None else key)
    rng = host_rng(0 if key is None else key)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    W = jax.tree_util.tree_unflatten(out_tree, [
        rng.standard_normal((k, *leaf.shape)).astype(leaf.dtype) for leaf in out_leaves
    ])  # fmt: skip
    vjp_fn = vjp if vjp is not None else vjp_of(g)
    one = jitted(vjp_fn)
    start = time.perf_counter()
    loop = [one(primals, jax.tree_util.tree_map(lambda w, j=j: w[j], W)) for j in range(k)]
    seconds = (time.perf_counter() - start) / k
    batched = jitted(_Batched(vjp_fn))(primals, W)
    zero = one(primals, jax.tree_util.tree_map(lambda w: np.zeros_like(w[0]), W))
    for a in (loop[0], zero):
        check_same_structure(primals, a, where, "the VJP", "primals")
        check_floating_leaves(a, where, "the VJP")
    Wf = np.concatenate(
        [np.asarray(w, np.float64).reshape(k, -1) for w in jax.tree_util.tree_leaves(W)], axis=1
    )  # (k, m) fmt: skip
    A = [jnp.stack(a) for a in zip(*[jax.tree_util.tree_leaves(t) for t in loop], strict=True)]
    B = jax.tree_util.tree_leaves(batched)
    Z = jax.tree_util.tree_leaves(zero)

    paths = leaf_paths(primals)
    tracker = Tracker(callback, paths)
    lf = LeafFunction(
        lambda p: g(p), primals, (), None if pattern is None else (lambda p: pattern(p)),
        budget, tracker,
    )  # fmt: skip
    P, m = sum(int(np.size(a)) for a in lf.leaves), Wf.shape[1]
    refs = LeafReferences(lf, dtype, seed, exact_jvps(g, lf), P <= DIRECTIONAL_ABOVE)
    bars = reference_bars(refs.dtype)
    full = P <= DIRECTIONAL_ABOVE and P * m <= FULL_JACOBIAN_UP_TO
    rows, names, redo = [], [], {}
    for l, path in enumerate(paths):
        tracker.leaf(l)
        size = int(np.size(lf.leaves[l]))
        A_l = A[l].reshape(k, -1)
        if full:
            before = lf.evaluations
            unit = Directions(index=np.arange(size))
            ref = refs.reference(l, unit)
            tol = bars[bar_name(ref.name)]
            keep = None if ref.crossed is None else ~ref.crossed
            wJ, bar = Wf @ ref.value.T, np.abs(Wf) @ ref.error.T  # (k, size)
            bad = failing(np.asarray(A_l, np.float64).T, wJ.T, bar.T, tol, keep)
            ref = refs.confirm(l, unit, ref, bad)
            names.append(ref.name)
            wJ, bar = Wf @ ref.value.T, np.abs(Wf) @ ref.error.T
            crossed = None if ref.crossed is None else np.broadcast_to(ref.crossed, (k, size))
            excl = None if crossed is None or not crossed.any() else crossed
            redo[("vjp", l)] = (wJ, bar, bars[bar_name(ref.name)], excl, lf.evaluations - before)
            rows.append(row_within("vjp", path, np.asarray(A_l, np.float64), wJ, bar,
                                   bars[bar_name(ref.name)], excl, (k, size),
                                   lf.evaluations - before, seconds))  # fmt: skip
        d = refs.random(l, k)
        before = lf.evaluations
        ref = refs.reference(l, d)
        tol = bars[bar_name(ref.name)]
        ref = refs.confirm(l, d, ref, _dot_product_terms(Wf, ref, d, A_l, tol)[-1])
        names.append(ref.name)
        redo[("dot-product", l)] = (ref, d, tol, lf.evaluations - before)
        rows.append(_dot_product_row(path, Wf, ref, d, A_l, tol, lf.evaluations - before,
                                     seconds))  # fmt: skip
        c = compare_leaf(path, np.asarray(Z[l], np.float64).ravel(), np.zeros(size))
        rows.append(leaf_row("zero cotangent", c, 0.0, 0, 1, seconds))
        c = compare_leaf(path, np.asarray(B[l], np.float64).reshape(k, -1),
                         np.asarray(A_l, np.float64))  # fmt: skip
        redo[("vmap", l)] = (bars["vmap"],)
        rows.append(leaf_row("vmap", c, bars["vmap"], 0, k, seconds))
    spread_note = ""
    if not view.paths:  # rounding of sums that cancel
        spread_note = _within_spread(rows, redo, paths, one, primals, W, A, B, Wf, k, seconds,
                                     key, dtype)  # fmt: skip
    name = reference_name(names)
    description = (
        f"check_vjp: P={P} primal entries, m={m} outputs, k={k}, reference {name}, "
        f"{lf.evaluations} evaluations"
    )
    description += (
        spread_note + refused_note(lf, paths) + view_note(view, any(complex_out)) + held_note(held)
    )
    return GradCheckReport(_ordered(rows, paths), name, description, view.dtype or dtype)


def _dot_product_row(path, Wf, ref, d, A_l, tol, evaluations, seconds, spread=None) -> CheckRow:
    r""":math:`\langle w, J v \rangle` against :math:`\langle \mathrm{vjp}(w), v \rangle` for
    each cotangent and its tangent; tangents whose steps crossed a kink are left out.
    ``spread``: ``(k, size)``, the rounding of each VJP entry beyond its own ulps."""
    lhs, rhs, keep, error, _ = _dot_product_terms(Wf, ref, d, A_l, tol, spread)
    exclude = None if keep.all() else ~keep
    c = compare_leaf(path, rhs, lhs, exclude)._replace(normwise=float(error))
    return leaf_row("dot-product", c, tol, int((~keep).sum()), evaluations, seconds)


def _dot_product_terms(Wf, ref, d, A_l, tol, spread=None):
    """``(lhs, rhs, keep, error, failing)``: the two sides per tangent, those compared, the
    row's error, and the tangents beyond ``tol``."""
    k = Wf.shape[0]
    Jv, err = ref.value, ref.error  # (k, m)
    V = jnp.reshape(jnp.asarray(d.blocks), (k, -1))
    rhs = np.asarray(jnp.sum(A_l * V.astype(A_l.dtype), axis=1), np.float64)
    norm_a = np.asarray(jnp.linalg.norm(A_l, axis=1), np.float64)
    norm_v = np.asarray(jnp.linalg.norm(V, axis=1), np.float64)
    lhs = np.sum(Wf * Jv, axis=1)
    # the reference's bar, and the rounding of <vjp(w), v> in the candidate's dtype (a sum of
    # a leaf's entries that cancels: Directions.rounding)
    u = float(jnp.finfo(A_l.dtype).eps)
    terms = np.asarray(jnp.sum(jnp.abs(A_l * V.astype(A_l.dtype)), axis=1), np.float64)
    unc = np.sum(np.abs(Wf) * err, axis=1) + 2 * ROUNDING * u * terms
    if spread is not None:  # the VJP's rounding where its entries are sums that cancel
        unc = unc + np.sum(spread * np.abs(np.asarray(V, np.float64)), axis=1)
    keep = np.ones(k, bool) if ref.crossed is None else ~ref.crossed
    scale = max(np.max(np.linalg.norm(Wf, axis=1) * np.linalg.norm(Jv, axis=1)),
                np.max(norm_a * norm_v))  # fmt: skip
    excess = np.where(keep, np.maximum(np.abs(lhs - rhs) - unc, 0), 0.0)
    excess = np.where(keep & np.isnan(lhs - rhs), np.inf, excess)
    error = 0.0 if excess.max() == 0 else (excess.max() / scale if scale > 0 else np.inf)
    bad = (excess > tol * scale) | (keep & np.isnan(lhs - rhs))
    return lhs, rhs, keep, error, bad


def _within_spread(rows, redo, paths, one, primals, W, A, B, Wf, k, seconds, key,
                   dtype) -> str:  # fmt: skip
    """The failing ``vjp``, ``dot-product`` and ``vmap`` rows judged again (in place) with
    the rounding the VJP's own computation carries, as ``check_grad`` judges a gradient that
    vanishes up to rounding (:func:`~functional_nn.checking._precision_check.within_spread`):
    the VJPs again at :data:`NUDGES` one-ulp nudges of every primal (the compiled VJP: nothing
    compiles), the leaf's largest change times :data:`SPREAD_FACTOR` added to each entry's
    bar. Returns the description's note ("" where no such row failed)."""
    failed = [i for i, r in enumerate(rows) if r.status == "fail"
              and (r.method, paths.index(r.leaf)) in redo]  # fmt: skip
    if not failed:
        return ""
    u = float(jnp.finfo(dtype).eps)
    spread = [np.zeros(a.shape, np.float64) for a in A]
    for moved in nudged(primals, u, key, NUDGES):
        again = [one(moved, jax.tree_util.tree_map(lambda w, j=j: w[j], W)) for j in range(k)]
        for l, a in enumerate(zip(*[jax.tree_util.tree_leaves(t) for t in again], strict=True)):
            spread[l] = np.maximum(spread[l], np.abs(np.asarray(jnp.stack(a), np.float64) - A[l]))
    passed = []
    for i in failed:
        method, path = rows[i].method, rows[i].leaf
        l = paths.index(path)
        A_l = np.asarray(A[l], np.float64).reshape(k, -1)
        # the leaf's largest change, per cotangent: rounding is alike across a leaf whose
        # entries cancel, and four nudges may leave one entry's rounding unmoved
        largest = spread[l].reshape(k, -1).max(axis=1)[:, None]
        S_l = SPREAD_FACTOR * np.broadcast_to(largest, A_l.shape)
        if method == "vjp":
            wJ, bar, tol, excl, evaluations = redo[(method, l)]
            row = row_within("vjp", path, A_l, wJ, bar + S_l, tol, excl, A_l.shape, evaluations,
                             seconds)  # fmt: skip
        elif method == "vmap":  # the batched program rounds otherwise than the loop
            (tol,) = redo[(method, l)]
            B_l = np.asarray(B[l], np.float64).reshape(k, -1)
            row = row_within("vmap", path, B_l, A_l, S_l, tol, None, A_l.shape, k, seconds)
        else:
            ref, d, tol, evaluations = redo[(method, l)]
            row = _dot_product_row(path, Wf, ref, d, A[l].reshape(k, -1), tol, evaluations,
                                   seconds, S_l)  # fmt: skip
        if row.status != "fail":
            rows[i] = row
            passed.append(f"{method} {path}")
    judged = [f"{rows[i].method} {rows[i].leaf}" for i in failed]
    return judged_again("rows", "VJP", judged, passed, dtype)


def _ordered(rows: list[CheckRow], paths: list[str]) -> list[CheckRow]:
    kinds = ["vjp", "dot-product", "zero cotangent", "vmap"]
    return sorted(rows, key=lambda r: (kinds.index(r.method), paths.index(r.leaf)))


def vjp_of(g: Callable) -> Callable:
    """``(primals, cotangents) -> jax.vjp(g, primals)[1](cotangents)[0]``, equal for equal
    ``g`` (one compiled program serves every call)."""
    return _VJPOf(g)


class _VJPOf(Keyed):
    def __call__(self, primals, cotangents):
        return jax.vjp(self.fn, primals)[1](cotangents)[0]


class _Batched(Keyed):
    def __call__(self, primals, W):
        return jax.vmap(lambda w: self.fn(primals, w))(W)
