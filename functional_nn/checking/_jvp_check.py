r"""``check_jvp``: forward mode, the counterpart of ``check_vjp``, leaf by leaf.

``jax.jvp(g)`` (every ``custom_jvp`` rule inside ``g`` included), or a ``jvp`` of the user's,
against the engine's reference :math:`J v` along directions of one primal leaf
(:mod:`~functional_nn.checking._references`: autodiff of a top-level custom rule's primal,
the validated complex step, central differences with their bar): every entry for tangents
along each entry of a leaf, up to ``DIRECTIONAL_ABOVE`` parameters, ``k`` random tangents per
leaf above. Then the properties a JVP must have whatever ``g`` is: linear in the tangent
(:math:`\mathrm{jvp}(2v) = 2\,\mathrm{jvp}(v)`, exact in binary floating point, and
:math:`\mathrm{jvp}(v_1 + v_2) = \mathrm{jvp}(v_1) + \mathrm{jvp}(v_2)`), zero for a zero
tangent, the same under ``vmap`` as in a loop, and, where ``jax.vjp(g)`` exists, the transpose
of the VJP: :math:`\langle w, \mathrm{jvp}(v) \rangle = \langle \mathrm{vjp}(w), v \rangle`.
"""

from __future__ import annotations

import functools
import math
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
    pairs,
    view_note,
)
from functional_nn.checking._directions import host_rng, seed_words
from functional_nn.checking._leaves import Keyed, held_note
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


def _held_jvp(held, jvp):
    return lambda p, t: jvp(held.fill(p), held.blank(t))  # the user's tangents: None if held


def _paired_jvp(view, jvp_given, complex_out, out_tree):
    return lambda p, t: pairs(jvp_given(view.of(p), view.of(t)))


TANGENT_CHUNK = 256
"""Unit tangents pushed forward at once (a chunk of them is ``TANGENT_CHUNK`` leaves)."""

METHODS = ("jvp", "linearity", "zero tangent", "vmap", "transpose")


@locating("jvp")
@highest_precision
def check_jvp(
    g: Callable[[Any], Any],
    primals: Any,
    jvp: Callable[[Any, Any], Any] | None = None,
    *,
    k: int = 3,
    key: jax.Array | None = None,
    pattern: Callable[[Any], jax.Array] | None = None,
    memory_budget: int | None = None,
    callback: Callable[[Progress], None] | None = None,
    locate: bool = True,  # read by @locating, which runs locate when the check fails
) -> GradCheckReport:
    r"""Check the JVP (forward mode) of any function of any pytree, leaf by leaf.

    Args:
        g: ``primals -> outputs``, pytrees of real or complex arrays. ``jax.jvp(g)`` is
            checked, every
            ``custom_jvp`` rule inside included, unless ``jvp`` is given.
        primals: any pytree: its inexact array leaves are checked (complex ones as real pairs
            (Re, Im), :mod:`~functional_nn.checking._complex_leaves`), every other
            leaf held fixed and named in the report's description.
        jvp: ``jvp(primals, tangents) -> tangents of the outputs`` (``tangents`` like the
            checked leaves of ``primals``: ``None`` at the held ones).
        k: random tangents per leaf (at least 2: the sum test takes two); key: their key.
        pattern: ``primals -> bool array``: steps that change it crossed a kink; those
            tangents are left out of the ``jvp`` rows and reported.
        memory_budget: bytes one batch of evaluations of ``g`` may use (default 256 MiB).
        callback: called with a :class:`~functional_nn.checking._progress.Progress` after
            every batch of evaluations.
        locate: when the check fails, :func:`~functional_nn.locate` names the rule inside
            ``g`` whose derivative is wrong, along a random cotangent (``report.located``).

    A program in bfloat16 or float16, or computing below its primals' precision, is judged
    against itself raised to float64: one ``jvp`` row per leaf, failing only beyond the
    program's own rounding (:mod:`~functional_nn.checking._precision_maps`).

    Returns:
        :class:`~functional_nn.GradCheckReport` with rows ``jvp``, ``linearity``,
        ``zero tangent``, ``vmap`` and (where ``jax.vjp(g)`` runs) ``transpose`` per leaf.

    >>> import jax.numpy as jnp
    >>> g = lambda p: {"y": jnp.sin(p["x"]) * p["a"]}
    >>> p = {"a": jnp.array(2.0), "x": jnp.array([0.5, 1.0, 1.5])}
    >>> check_jvp(g, p).ok
    True
    """
    where = "check_jvp"
    if is_sharded(primals):  # split over devices or processes: never gathered
        if pattern is not None:
            raise ValueError(f"{where}: pattern= is not taken when leaves are sharded")
        return sharded_check_map("jvp", g, primals, jvp, k, key, where)
    o = open_check(
        g,
        primals,
        jvp,
        pattern,
        where=where,
        name="primals",
        k=k,
        memory_budget=memory_budget,
        through_held=_held_jvp,
        through_pairs=_paired_jvp,
        check_output=inexact_outputs(where),
    )
    g, primals, jvp_user, pattern = o.fn, o.tree, o.given, o.pattern
    held, view, program, k, budget = o.held, o.view, o.program, o.k, o.budget
    complex_out = any(o.complex_out)
    # low precision (or a program computing below its parameters'): against float64
    opts = dict(k=k, key=key, pattern=pattern, budget=budget, callback=callback)
    low = low_precision_map("jvp", g, primals, jvp_user, where=where, closed=program, **opts)
    if low is not None:
        low.description += view_note(view, complex_out) + held_note(held)
        return low
    dtype = check_dtype(primals, where)
    if k < 2:
        raise ValueError(f"{where}: k must be at least 2 (the sum test takes two tangents)")
    seed = seed_words(0 if key is None else key)

    paths = leaf_paths(primals)
    tracker = Tracker(callback, paths)
    lf = LeafFunction(g, primals, (), pattern, budget, tracker)
    P, m = sum(int(np.size(a)) for a in lf.leaves), lf.m
    push = _pushforward(g, lf, jvp_user)
    transpose = _transposed(g, lf, where)
    refs = LeafReferences(lf, dtype, seed, exact_jvps(g, lf), P <= DIRECTIONAL_ABOVE)
    bars = reference_bars(refs.dtype)
    u = float(jnp.finfo(refs.dtype).eps)
    full = P <= DIRECTIONAL_ABOVE and P * m <= FULL_JACOBIAN_UP_TO
    rng = host_rng(0 if key is None else key)
    W = rng.standard_normal((k, m))
    rows, names, redo = [], [], {}
    for l, path in enumerate(paths):
        tracker.leaf(l)
        leaf = lf.leaves[l]
        size = int(np.size(leaf))
        d = Directions(index=np.arange(size)) if full else refs.random(l, k)
        V = _tangents(d, leaf)  # a function of a chunk's positions
        cand = np.concatenate([push(l, V(js)) for js in _chunks(d.n)])  # (n, m)
        before = lf.evaluations
        ref = refs.reference(l, d)
        tol = bars[bar_name(ref.name)]
        keep = None if ref.crossed is None else ~ref.crossed
        err = ref.error + ROUNDING * u * np.abs(cand)
        ref = refs.confirm(l, d, ref, failing(cand, ref.value, err, tol, keep))
        names.append(ref.name)
        err = ref.error + ROUNDING * u * np.abs(cand)
        excl = None if ref.crossed is None or not ref.crossed.any() else ref.crossed
        excl = None if excl is None else np.broadcast_to(excl[:, None], cand.shape)
        redo[("jvp", l)] = (d, cand, ref.value, err, tol, excl, lf.evaluations - before)
        rows.append(row_within("jvp", path, cand, ref.value, err, tol, excl, (d.n, m),
                               lf.evaluations - before))  # fmt: skip
        rows += _properties(path, l, k, refs, push, transpose, W, bars["vmap"], u, redo)
    spread_note = ""
    if not view.paths:  # rounding of sums that cancel
        spread_note = _within_spread(rows, redo, paths, g, lf, jvp_user, W, key, dtype)
    description = (
        f"check_jvp: P={P} primal entries, m={m} outputs, k={k}, reference "
        f"{reference_name(names)}, {lf.evaluations} evaluations"
    )
    description += (
        spread_note + refused_note(lf, paths) + view_note(view, complex_out) + held_note(held)
    )
    order = {name: i for i, name in enumerate(METHODS)}
    rows.sort(key=lambda r: (order[r.method], paths.index(r.leaf)))
    return GradCheckReport(rows, reference_name(names), description, view.dtype or dtype)


def _chunks(n: int):
    for start in range(0, n, TANGENT_CHUNK):
        yield np.arange(start, min(start + TANGENT_CHUNK, n))


def _tangents(d: Directions, leaf) -> Callable:
    """``js -> (len(js), *leaf shape)``: the tangents of ``d`` in the leaf's dtype."""
    shape, dtype = tuple(jnp.shape(leaf)), jnp.result_type(leaf)
    size = int(np.size(leaf))

    def make(js):
        if d.index is not None:
            out = np.zeros((len(js), size), dtype)
            out[np.arange(len(js)), d.index[js]] = 1
            return out.reshape(len(js), *shape)
        return d.blocks.blocks(js)

    return make


def _pushforward(g, lf: LeafFunction, jvp_user, leaves=None) -> Callable:
    """``(l, V (n, *leaf shape)) -> (n, m)`` float64: the checked JVP of tangents in leaf
    ``l`` alone (zero elsewhere), batched with ``vmap`` (a user's ``jvp``, of the checked
    tree, gets one call per tangent: it need not batch); at ``leaves`` (default the
    checked point's)."""
    leaves = list(lf.leaves) if leaves is None else list(leaves)

    def tangent_tree(l, v):
        zeros = [jnp.zeros_like(a) for a in lf.leaves]
        zeros[l] = v
        return jax.tree_util.tree_unflatten(lf.treedef, zeros)

    if jvp_user is None:
        program = _push_program(Keyed(g))
        primals = jax.tree_util.tree_unflatten(lf.treedef, leaves)

        def push(l, V):
            n = len(V)
            c = int(min(TANGENT_CHUNK, 2 ** math.ceil(math.log2(max(n, 1)))))
            out = []
            for start in range(0, n, c):
                chunk = np.asarray(V[start : start + c], leaf_dtype(l))  # NumPy 1 widens
                pad = c - len(chunk)
                if pad:  # one shape per leaf: the last chunk padded with zeros
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                out.append(np.asarray(program(primals, l, chunk), np.float64)[: c - pad])
            return np.concatenate(out) if out else np.zeros((0, lf.m))

        def leaf_dtype(l):
            return jnp.result_type(lf.leaves[l])

        push.one = lambda l, v: push(l, np.asarray(v, leaf_dtype(l))[None])[0]
        return push

    def one(l, v):
        at = jax.tree_util.tree_unflatten(lf.treedef, leaves)
        return lf.flat(jvp_user(at, tangent_tree(l, v)))

    def push(l, V):
        return np.stack([np.asarray(one(l, jnp.asarray(v)), np.float64) for v in V])

    push.one = one
    return push


@functools.lru_cache(maxsize=64)
def _push_program(g: Keyed) -> Callable:
    """``(primals, l, V (c, *leaf shape)) -> (c, m)``: ``jax.jvp(g)`` of tangents in leaf ``l``
    alone, vmapped and compiled once per ``g``, leaf and chunk size (``l`` static)."""

    def push(primals, l, V):
        leaves, treedef = jax.tree_util.tree_flatten(primals)

        def one(v):
            tangents = [jnp.zeros_like(a) for a in leaves]
            tangents[l] = v
            out = jax.jvp(g.fn, (primals,), (jax.tree_util.tree_unflatten(treedef, tangents),))[1]
            flat = [jnp.reshape(a, (-1,)) for a in jax.tree_util.tree_leaves(out)]
            return jnp.concatenate(flat) if flat else jnp.zeros((0,))

        return jax.vmap(one)(V)

    return jax.jit(push, static_argnums=1)


def _transposed(g, lf: LeafFunction, where) -> Callable | None:
    """``(l, w (m,)) -> (leaf size,)``: leaf ``l`` of ``jax.vjp(g)(w)``, or None where ``g``
    has no VJP (a ``custom_jvp`` rule JAX cannot transpose)."""
    primals = jax.tree_util.tree_unflatten(lf.treedef, list(lf.leaves))
    try:
        out, vjp_fn = jax.vjp(lambda p: lf.flat(g(p)), primals)
        vjp_fn(jnp.zeros_like(out))
    except Exception:  # noqa: BLE001 -- no reverse mode: the transpose row is left out
        return None

    def back(l, w):
        ct = vjp_fn(jnp.asarray(w, out.dtype))[0]
        return np.asarray(jax.tree_util.tree_leaves(ct)[l], np.float64).ravel()

    return back


def _properties(path, l, k, refs, push, transpose, W, tol, u, redo) -> list[CheckRow]:
    """The rows every JVP must pass, along ``k`` random tangents of leaf ``l`` (what they
    were made of kept in ``redo``, for :func:`_within_spread`)."""
    d = refs.random(l, k, purpose=7)
    V = np.asarray(d.blocks)  # (k, *shape)
    one = push.one
    loop = np.stack([np.asarray(one(l, jnp.asarray(v)), np.float64) for v in V])  # (k, m)
    batched = push(l, V)
    dt = V.dtype  # NumPy 1 turns 2 * a float32 scalar into a float64 one: cast back
    twice = np.stack([np.asarray(one(l, jnp.asarray(2 * v, dt)), np.float64) for v in V[:1]])
    summed = np.asarray(one(l, jnp.asarray(V[0] + V[1], dt)), np.float64)
    zero = np.asarray(one(l, jnp.zeros(V.shape[1:], dt)), np.float64)
    rows = []
    lhs = np.concatenate([twice[0], summed])
    rhs = np.concatenate([2 * loop[0], loop[0] + loop[1]])
    bar = ROUNDING * u * np.concatenate([2 * np.abs(loop[0]), np.abs(loop[0]) + np.abs(loop[1])])
    redo[("linearity", l)] = (V, loop, lhs, rhs, bar, tol)
    rows.append(row_within("linearity", path, lhs, rhs, bar, tol, None, (2, loop.shape[1]), 0))
    c = compare_leaf(path, zero, np.zeros_like(zero))
    rows.append(leaf_row("zero tangent", c, 0.0, 0, 0))
    redo[("vmap", l)] = (V, loop, batched, None, None, tol)
    rows.append(leaf_row("vmap", compare_leaf(path, batched, loop), tol, 0, 0))
    if transpose is not None:
        left = W @ loop.T  # (k_w, k_v): <w, jvp(v)>
        back = np.stack([transpose(l, w) for w in W])  # (k_w, size)
        right = back @ V.reshape(k, -1).T.astype(np.float64)
        bar = (
            ROUNDING * u * (np.abs(W) @ np.abs(loop).T + np.abs(back) @ np.abs(V.reshape(k, -1)).T)
        )
        redo[("transpose", l)] = (V, loop, left, right, bar, tol)
        rows.append(row_within("transpose", path, left, right, bar, tol, None, left.shape, 0))
    return rows


def _within_spread(rows, redo, paths, g, lf, jvp_user, W, key, dtype) -> str:
    r"""The failing rows of a leaf judged again (in place) with the rounding that the JVP's
    own computation carries, as ``check_grad`` judges a gradient that vanishes up to rounding
    (:func:`~functional_nn.checking._precision_check.within_spread`): the JVPs again at
    :data:`NUDGES` one-ulp nudges of every primal (the compiled pushforward: nothing
    compiles), the leaf's largest change :math:`R` times :data:`SPREAD_FACTOR` added to each
    entry's bar: :math:`R` for ``jvp`` and ``vmap``, :math:`2R` for ``linearity`` (two
    tangents), :math:`2 R \sum_j |w_j|` for ``transpose`` (both sides, the VJP's rounding
    taken alike). Returns the description's note ("" where no such row failed)."""
    failed = [i for i, r in enumerate(rows) if r.status == "fail"
              and (r.method, paths.index(r.leaf)) in redo]  # fmt: skip
    if not failed:
        return ""
    u = float(jnp.finfo(dtype).eps)
    primals = jax.tree_util.tree_unflatten(lf.treedef, list(lf.leaves))
    moved = [jax.tree_util.tree_leaves(p) for p in nudged(primals, u, key, NUDGES)]
    pushes = [_pushforward(g, lf, jvp_user, leaves) for leaves in moved]
    spread: dict = {}  # (leaf, "unit" or "dense") -> the largest change

    def largest(l, kind):
        if (l, kind) not in spread:
            if kind == "jvp":
                d, cand = redo[("jvp", l)][:2]
                V = _tangents(d, lf.leaves[l])
                again = [np.concatenate([p(l, V(js)) for js in _chunks(d.n)]) for p in pushes]
            else:  # the properties' tangents, shared by their rows
                V, cand = redo[("vmap", l)][:2]
                again = [p(l, V) for p in pushes]
            spread[(l, kind)] = max(float(np.abs(a - cand).max(initial=0)) for a in again)
        return SPREAD_FACTOR * spread[(l, kind)]

    passed = []
    for i in failed:
        method, path = rows[i].method, rows[i].leaf
        l = paths.index(path)
        if method == "jvp":
            d, cand, value, err, tol, excl, evaluations = redo[(method, l)]
            row = row_within("jvp", path, cand, value, err + largest(l, "jvp"), tol, excl,
                             cand.shape, evaluations)  # fmt: skip
        else:
            V, loop, a, b, bar, tol = redo[(method, l)]
            R = largest(l, "dense")
            if method == "vmap":
                row = row_within("vmap", path, a, loop, np.full(a.shape, R), tol, None,
                                 a.shape, 0)  # fmt: skip
            elif method == "linearity":
                row = row_within("linearity", path, a, b, bar + 2 * R, tol, None, a.shape, 0)
            else:
                floor = 2 * R * np.sum(np.abs(W), axis=1)[:, None]
                row = row_within("transpose", path, a, b, bar + floor, tol, None, a.shape, 0)
        if row.status != "fail":
            rows[i] = row
            passed.append(f"{method} {path}")
    judged = [f"{rows[i].method} {rows[i].leaf}" for i in failed]
    return judged_again("rows", "JVP", judged, passed, dtype)
