r"""Comparing gradients leaf by leaf.

The error of a leaf ``a`` against a reference ``b`` is **normwise**,

.. math:: e = \frac{\max_i |a_i - b_i|}{\max(\max_i |a_i|, \max_i |b_i|)},

so that an entry that cancels to nearly zero does not dominate (its own relative error can be
large while the gradient is right). Beside it each comparison reports the maximum absolute
error and the worst **elementwise** relative error :math:`|a_i - b_i| / \max(|a_i|, |b_i|)`,
with the index where it occurs and both values there. Bars (DESIGN.md) apply to ``e``.

Comparisons run on the host in float64 (or complex128): this is a check, not a hot path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["LeafComparison", "compare_gradients"]


class LeafComparison(NamedTuple):
    """How one leaf of a gradient differs from the same leaf of a reference.

    Attributes:
        path: the leaf's path in the tree, e.g. ``"[1].W"`` (layer 2's weights).
        shape: the leaf's shape.
        normwise: ``max|a - b| / max(max|a|, max|b|)``; 0 when both are all zeros.
        max_abs: ``max|a - b|``.
        max_rel: worst elementwise ``|a_i - b_i| / max(|a_i|, |b_i|)`` (0 where both are 0).
        index: where ``max_rel`` occurs, a tuple of ints.
        a_value, b_value: both values at ``index``.
    """

    path: str
    shape: tuple[int, ...]
    normwise: float
    max_abs: float
    max_rel: float
    index: tuple[int, ...]
    a_value: Any
    b_value: Any


def _compare_leaf(path: str, a, b) -> LeafComparison:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"compare_gradients: leaf {path} has shape {a.shape} in a but {b.shape} in b"
        )
    kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(kind), b.astype(kind)
    if a.size == 0:
        return LeafComparison(path, a.shape, 0.0, 0.0, 0.0, (), None, None)
    diff = np.abs(a - b)
    scale = max(np.abs(a).max(), np.abs(b).max())
    with np.errstate(invalid="ignore", divide="ignore"):
        normwise = diff.max() / scale if scale > 0 else (0.0 if diff.max() == 0 else np.inf)
        denom = np.maximum(np.abs(a), np.abs(b))
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1), 0.0)
    rel = np.where(np.isnan(diff), np.inf, rel)  # a nan anywhere is the worst error
    if np.isnan(diff).any():
        normwise = np.inf
    flat = int(np.argmax(rel))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return LeafComparison(
        path,
        a.shape,
        float(normwise),
        float(np.nanmax(diff)) if not np.isnan(diff).all() else float("nan"),
        float(rel.flat[flat]),
        index,
        a[index].item(),
        b[index].item(),
    )


def compare_gradients(a: Any, b: Any) -> list[LeafComparison]:
    """Compare two gradient pytrees of the same structure, leaf by leaf.

    Args:
        a: a gradient (any pytree of arrays, e.g. a tuple of :class:`~functional_nn.Layer`).
        b: the reference, with the same tree structure and leaf shapes.

    Returns:
        one :class:`LeafComparison` per leaf, in tree order.

    Raises:
        TypeError: the two trees differ in structure; both structures are printed.
        ValueError: a leaf differs in shape.

    >>> import jax.numpy as jnp
    >>> from functional_nn import Layer
    >>> g = (Layer(jnp.array([[1.0, 2.0]]), None),)
    >>> [(c.path, c.normwise) for c in compare_gradients(g, g)]
    [('[0].W', 0.0)]
    """
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    if tree_a != tree_b:
        raise TypeError(
            "compare_gradients: the two gradients have different tree structures:\n"
            f"  a: {tree_a}\n  b: {tree_b}"
        )
    return [
        _compare_leaf(jax.tree_util.keystr(path), la, lb)
        for (path, la), (_, lb) in zip(leaves_a, leaves_b, strict=True)
    ]
