r"""``check_vjp`` and ``check_jvp`` of a program in low precision, against itself in float64.

The same judgement as :mod:`~functional_nn.checking._precision_check` gives ``check_grad``,
for a function of any outputs: the reference is the Jacobian of the program raised to float64
(:func:`~functional_nn.program.promote`), from float64 central differences along each leaf's
directions; the candidate is the VJP (``w^T J`` for ``k`` random cotangents ``w``) or the JVP
(``J v`` along the leaf's directions) that the program computes in its own precision; a leaf
fails only beyond the yardstick: :data:`SPREAD_FACTOR` times the spread of the candidate over
one-ulp nudges of every primal, and at least :data:`FLOOR` units in the last place of the
candidate. One row per leaf (``vjp`` or ``jvp``); the dot-product, zero, vmap and linearity
rows of the float32 and float64 checks are properties of the candidate's own arithmetic and
are not repeated here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import x64
from functional_nn.checking._comparison import GradCheckReport, leaf_paths, row_within
from functional_nn.checking._directions import host_rng, seed_words
from functional_nn.checking._precision_check import (
    FLOOR,
    NUDGES,
    SPREAD_FACTOR,
    applies,
    float64_of,
    nudge,
    nudged,
    precision_of,
    spread_note,
)
from functional_nn.checking._progress import Tracker
from functional_nn.checking._references import (
    Directions,
    LeafReferences,
    failing,
    params_dtype,
    reference_name,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE
from functional_nn.differences._blocks import LeafFunction

FULL_UP_TO = 1_000_000
"""Entries of the Jacobian up to which every primal entry is a direction (as the checkers)."""


def low_precision_map(mode, g, primals, user, *, k, key, pattern, budget, callback, where,
                      closed=None):  # fmt: skip
    """The report of ``check_vjp`` (``mode="vjp"``, ``user``: ``vjp(primals, ct)``) or
    ``check_jvp`` (``"jvp"``, ``user``: ``jvp(primals, tangents)``) for a program in low
    precision, or None where this path does not apply (:func:`applies`)."""
    own = params_dtype(primals, where)
    compute = precision_of(g, primals, own, closed)
    if not applies(own, compute, None):
        return None
    g64, p64 = float64_of(g, primals, compute, where)
    out = jax.eval_shape(g, primals)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    u = float(jnp.finfo(compute).eps)
    paths = leaf_paths(primals)
    tracker = Tracker(callback, paths)
    seed = seed_words(0 if key is None else key)
    rng = host_rng(0 if key is None else key)
    with x64():
        lf = LeafFunction(lambda p: g64(p), p64, (), pattern, budget, tracker)
        refs = LeafReferences(lf, "float64", seed, complex_blocks=False)
    P, m = sum(int(np.size(a)) for a in lf.leaves), lf.m
    full = P <= DIRECTIONAL_ABOVE and P * m <= FULL_UP_TO
    if mode == "vjp":
        W = rng.standard_normal((k, m))
        cand_fn = _vjp_candidate(g, user, W, out_leaves, out_tree)
    else:
        cand_fn = _jvp_candidate(g, user)
    rows, names = [], []
    for l, path in enumerate(paths):
        tracker.leaf(l)
        size = int(np.size(lf.leaves[l]))
        d = Directions(index=np.arange(size)) if full else refs.random(l, k)
        with x64():
            before = lf.evaluations
            ref = refs.reference(l, d)  # (n, m): J along the leaf's directions
        if mode == "vjp":  # w^T J at the directions: (k, n)
            value, err, mag = (
                W @ ref.value.T,
                np.abs(W) @ ref.error.T,
                np.abs(W) @ np.abs(ref.value.T),
            )
        else:  # J v: (n, m)
            value, err, mag = ref.value, ref.error, np.abs(ref.value)
        cand, spread = _with_spread(cand_fn, primals, l, d, nudge(own, compute), key, mode)
        bar = err + np.maximum(SPREAD_FACTOR * spread, FLOOR * u * np.maximum(mag, np.abs(cand)))
        keep = None if ref.crossed is None else ~ref.crossed
        if mode == "vjp":
            bad = failing(cand.T, value.T, bar.T, u, keep)
        else:
            bad = failing(cand, value, bar, u, keep)
        with x64():
            ref = refs.confirm(l, d, ref, bad)
        names.append(ref.name)
        if mode == "vjp":
            value = W @ ref.value.T
            bar = np.abs(W) @ ref.error.T + (bar - err)
            crossed = None if ref.crossed is None else np.broadcast_to(ref.crossed, value.shape)
        else:
            value, bar = ref.value, ref.error + (bar - err)
            crossed = None if ref.crossed is None else np.broadcast_to(
                ref.crossed[:, None], value.shape)  # fmt: skip
        excl = None if crossed is None or not crossed.any() else crossed
        rows.append(row_within(mode, path, cand, value, bar, u, excl, cand.shape,
                               lf.evaluations - before))  # fmt: skip
    name = reference_name(names)
    description = (
        f"{where}: P={P} primal entries, m={m} outputs, parameters {own}, computed in "
        f"{compute}; reference {name} (float64) of the promoted program, yardstick "
        f"{spread_note(compute)}; {lf.evaluations} evaluations in float64"
    )
    return GradCheckReport(rows, name, description, own, {})


def _vjp_candidate(g, user, W, out_leaves, out_tree):
    """``(primals, l, d) -> (k, n)``: the candidate's ``w_j^T J`` at leaf ``l``'s directions."""
    cts = []
    for j in range(W.shape[0]):
        parts, start = [], 0
        for leaf in out_leaves:
            n = int(np.prod(leaf.shape))
            parts.append(jnp.asarray(W[j, start : start + n].reshape(leaf.shape), leaf.dtype))
            start += n
        cts.append(jax.tree_util.tree_unflatten(out_tree, parts))

    def vjp(p, ct):
        if user is not None:
            return user(p, ct)
        return jax.vjp(g, p)[1](ct)[0]

    one = jax.jit(vjp)

    def cand(p, l, d):
        return np.stack([d.along(np.asarray(jax.tree_util.tree_leaves(one(p, ct))[l],
                                            np.float64)) for ct in cts])  # fmt: skip

    return cand


def _jvp_candidate(g, user):
    """``(primals, l, d) -> (n, m)``: the candidate's ``J v`` along leaf ``l``'s directions."""

    def push(p, t):
        out = user(p, t) if user is not None else jax.jvp(g, (p,), (t,))[1]
        leaves = jax.tree_util.tree_leaves(out)  # 16-bit outputs read in float32, exactly
        return jnp.concatenate([jnp.ravel(_wide16(a)) for a in leaves])

    one = jax.jit(push)

    def cand(p, l, d):
        leaves, treedef = jax.tree_util.tree_flatten(p)
        rows = []
        for j in range(d.n):
            v = np.zeros(int(np.size(leaves[l])))
            if d.index is not None:
                v[d.index[j]] = 1.0
            else:
                v = np.asarray(d.blocks.blocks([j]), np.float64).ravel()
            t = [jnp.zeros_like(a) for a in leaves]
            t[l] = jnp.asarray(v.reshape(np.shape(leaves[l])), jnp.result_type(leaves[l]))
            rows.append(np.asarray(one(p, jax.tree_util.tree_unflatten(treedef, t)), np.float64))
        return np.stack(rows)

    return cand


def _wide16(a):
    return a.astype(jnp.float32) if jnp.dtype(a.dtype).itemsize < 4 else a


def _with_spread(cand_fn, primals, l, d, u, key, mode):
    """The candidate at ``primals``, and its largest change over the nudged primals."""
    cand = cand_fn(primals, l, d)
    spread = np.zeros_like(cand)
    for moved in nudged(primals, u, key, NUDGES):
        spread = np.maximum(spread, np.abs(cand_fn(moved, l, d) - cand))
    return cand, spread
