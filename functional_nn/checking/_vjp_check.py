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
from functional_nn._util._validation import check_int
from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    compare_leaf,
    leaf_paths,
    leaf_row,
    row_within,
)
from functional_nn.checking._directions import host_rng, leaf_slices, random_leaf_directions
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
    flatten_function,
    jitted,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE, bar_name, reference_bars
from functional_nn.differences._steps import check_finite_leaves

FULL_JACOBIAN_UP_TO = 1_000_000
"""Entries of :math:`J` (outputs times primal entries) up to which every entry of the VJP is
compared; beyond, the dot-product test alone."""


@highest_precision
def check_vjp(
    g: Callable[[Any], Any],
    primals: Any,
    vjp: Callable[[Any, Any], Any] | None = None,
    *,
    k: int = 3,
    key: jax.Array | None = None,
    pattern: Callable[[Any], jax.Array] | None = None,
) -> GradCheckReport:
    r"""Check the VJP of any function of any pytree against its Jacobian, leaf by leaf.

    Args:
        g: ``primals -> outputs``, pytrees of real arrays. ``jax.vjp(g)`` is checked, every
            custom rule inside included, unless ``vjp`` is given.
        primals: any pytree of float32 or float64 arrays.
        vjp: ``vjp(primals, cotangents) -> like primals``, ``cotangents`` shaped like the
            outputs.
        k: random cotangents (and tangents per leaf); key: their PRNG key.
        pattern: ``primals -> bool array``: steps that change it crossed a kink.

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
    dtype = check_dtype(primals, where)
    check_finite_leaves(primals, "primals", where)
    k = check_int(k, "k", where)
    rng = host_rng(0 if key is None else key)
    bars = reference_bars(dtype)
    out = jax.eval_shape(g, primals)
    out_leaves, out_tree = jax.tree_util.tree_flatten(out)
    for leaf in out_leaves:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"{where}: g must return real arrays; got {leaf.dtype}")
    W = jax.tree_util.tree_unflatten(out_tree, [
        rng.standard_normal((k, *leaf.shape)).astype(leaf.dtype) for leaf in out_leaves
    ])  # fmt: skip
    vjp_fn = vjp if vjp is not None else vjp_of(g)
    one = jitted(vjp_fn)
    start = time.perf_counter()
    loop = [one(primals, jax.tree_util.tree_map(lambda w, j=j: w[j], W)) for j in range(k)]
    seconds = (time.perf_counter() - start) / k
    batched = jax.tree_util.tree_map(np.asarray, jitted(_Batched(vjp_fn))(primals, W))
    zero = one(primals, jax.tree_util.tree_map(lambda w: np.zeros_like(w[0]), W))
    for a in (loop[0], zero):
        check_same_structure(primals, a, where, "the VJP", "primals")
        check_floating_leaves(a, where, "the VJP")
    A = np.stack([flat_float64(a) for a in loop])  # (k, P)
    Wf = np.concatenate(
        [np.asarray(w, np.float64).reshape(k, -1) for w in jax.tree_util.tree_leaves(W)], axis=1
    )  # (k, m) fmt: skip

    flat = flatten_function(g, primals)
    P, m = flat.theta.size, Wf.shape[1]
    pattern_flat = None
    if pattern is not None:

        def pattern_flat(t):
            return jnp.ravel(pattern(flat.unravel(t)))

    exact = _exact_jvps(g, flat)
    slices, paths = leaf_slices(primals), leaf_paths(primals)
    rows, name = [], "-"
    if P <= DIRECTIONAL_ABOVE and P * m <= FULL_JACOBIAN_UP_TO:
        ref = best_reference(flat, np.arange(P), bars, (), pattern_flat, pattern, exact)
        name = ref.name
        wJ, bar = Wf @ ref.value.T, np.abs(Wf) @ ref.error.T  # (k, P)
        crossed = None if ref.crossed is None else np.broadcast_to(ref.crossed, (k, P))
        for (a, b), path in zip(slices, paths, strict=True):
            excl = None if crossed is None or not crossed.any() else crossed[:, a:b]
            rows.append(row_within("vjp", path, A[:, a:b], wJ[:, a:b], bar[:, a:b],
                                   bars[bar_name(name)], excl, (k, b - a), ref.evaluations,
                                   seconds))  # fmt: skip
    V = random_leaf_directions(primals, k, rng)  # (k L, P)
    ref = best_reference(flat, V, bars, (), pattern_flat, pattern, exact)
    name = ref.name if name == "-" else name
    Vf = np.asarray(V, np.float64)
    for l, path in enumerate(paths):
        sl = slice(l * k, (l + 1) * k)
        Jv, err = ref.value[sl], ref.error[sl]  # (k, m)
        lhs = np.sum(Wf * Jv, axis=1)
        rhs = np.sum(A * Vf[sl], axis=1)
        unc = np.sum(np.abs(Wf) * err, axis=1)
        scale = max(
            np.max(np.linalg.norm(Wf, axis=1) * np.linalg.norm(Jv, axis=1)),
            np.max(np.linalg.norm(A[:, slices[l][0] : slices[l][1]], axis=1)
                   * np.linalg.norm(Vf[sl], axis=1)),
        )  # fmt: skip
        excess = np.maximum(np.abs(lhs - rhs) - unc, 0)
        excess = np.where(np.isnan(lhs - rhs), np.inf, excess)
        error = 0.0 if excess.max() == 0 else (excess.max() / scale if scale > 0 else np.inf)
        c = compare_leaf(path, rhs, lhs)._replace(normwise=float(error))
        crossed = ref.crossed is not None and bool(ref.crossed[sl].any())
        rows.append(leaf_row("dot-product", c, bars[bar_name(ref.name)], int(crossed) * k,
                             ref.evaluations, seconds))  # fmt: skip
    Z = flat_float64(zero)
    B = np.stack([flat_float64(jax.tree_util.tree_map(lambda a, j=j: a[j], batched))
                  for j in range(k)])  # fmt: skip
    for (a, b), path in zip(slices, paths, strict=True):
        c = compare_leaf(path, Z[a:b], np.zeros(b - a))
        rows.append(leaf_row("zero cotangent", c, 0.0, 0, 1, seconds))
        c = compare_leaf(path, B[:, a:b], A[:, a:b])
        rows.append(leaf_row("vmap", c, bars["vmap"], 0, k, seconds))
    description = f"check_vjp: P={P} primal entries, m={m} outputs, k={k}, reference {name}"
    return GradCheckReport(_ordered(rows, paths), name, description, dtype)


def _ordered(rows: list[CheckRow], paths: list[str]) -> list[CheckRow]:
    kinds = ["vjp", "dot-product", "zero cotangent", "vmap"]
    return sorted(rows, key=lambda r: (kinds.index(r.method), paths.index(r.leaf)))


def _exact_jvps(g, flat):
    """For a top-level custom rule: ``directions -> (n, m)`` by ``jax.jvp`` of its primal."""
    primal = custom_primal(g)
    if primal is None:
        return None
    fp = flatten_function(primal, flat.unravel(flat.theta)).fn

    def exact(d):
        d = np.asarray(d)
        V = np.eye(flat.theta.size, dtype=flat.theta.dtype)[d] if d.ndim == 1 else d
        jvps = jitted(_JVPs(fp))(flat.theta, V)
        return np.asarray(jvps, np.float64)

    return exact


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


class _JVPs(Keyed):
    def __call__(self, theta, V):
        return jax.vmap(lambda v: jax.jvp(self.fn, (theta,), (v,))[1])(V)
