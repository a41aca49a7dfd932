r"""Complex parameters and outputs, checked as the real pairs they are to JAX.

A complex leaf :math:`z = x + \mathrm{i} y` of shape ``S`` is checked as a real leaf of shape
``(*S, 2)``, ``[..., 0]`` its real part and ``[..., 1]`` its imaginary part, and a complex
output leaf likewise. The engine then differentiates along the real and the imaginary axis of
each complex entry with central differences (the complex step cannot serve: it would need
``f`` analytic in :math:`x` and :math:`y` once they are made complex, and ``abs``, ``conj``
or ``real`` of a complex number are not), leaf by leaf, as for any real leaf.

JAX's conventions become the plain real ones in this view:

- ``jax.grad`` of a real :math:`f` of complex :math:`z` is :math:`\partial f / \partial x -
  \mathrm{i}\, \partial f / \partial y` (``jax.grad(lambda z: abs(z) ** 2)(1 + 2j) == 2 -
  4j``): the pair ``(Re g, -Im g)`` is the real gradient :math:`(\partial f / \partial x,
  \partial f / \partial y)`. The conjugate (PyTorch's convention) fails, at its leaf.
- ``jax.vjp`` is the transpose under the real bilinear form :math:`\langle a, b \rangle =
  \operatorname{Re} \sum a b` (no conjugate): a cotangent :math:`c` of a complex output is the
  real pair ``(Re c, -Im c)``, and so is the VJP at a complex primal; the dot-product test
  :math:`\langle w, J v\rangle = \langle \mathrm{vjp}(w), v \rangle` holds in it for
  holomorphic functions (``z ** 2``) and the rest (``conj``, ``abs``) alike.
- ``jax.jvp`` takes the tangent :math:`\dot x + \mathrm{i} \dot y` and returns the output's,
  read as its real pair ``(Re, Im)``.

``jax.grad``, ``jax.vjp`` and ``jax.jvp`` of the real view are JAX's own complex derivatives
composed with JAX's transposes of these conversions, which are exactly the maps above; a
user's gradient, VJP or JVP is mapped by them explicitly (:class:`ComplexView`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_nn.checking._leaves import Bound


def _is_complex(leaf) -> bool:
    return jnp.issubdtype(jnp.result_type(leaf), jnp.complexfloating)


def _pair(z):
    """A complex array as its real pair in a last axis of 2: ``(Re, Im)``."""
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1)


def _conjugate_pair(c):
    """A cotangent or gradient as its real pair: ``(Re, -Im)``."""
    return jnp.stack([jnp.real(c), -jnp.imag(c)], axis=-1)


class ComplexView(NamedTuple):
    """The real view of a tree with complex leaves (see the module docstring).

    Attributes:
        tree: the tree with each complex leaf ``(*S,)`` replaced by its real pair ``(*S, 2)``.
        paths: the complex leaves' paths, in tree order (empty: ``tree`` is the tree given).
        dtype: the complex dtype's name (``"complex64"``) or ``""``.
        of: ``real-view-like -> tree-like``: pairs back to complex (primals, tangents).
        fn: ``g -> g of the real view``, complex outputs returned as ``(Re, Im)`` pairs.
        covector: ``(tree-like, what, where) -> real-view-like``: a gradient or VJP at the
            complex leaves as ``(Re, -Im)`` (``TypeError`` if such a leaf is not complex).
        token: the structure, which leaves are complex and their dtypes: the view's
            functions are :class:`~functional_nn.checking._leaves.Bound` on it.
    """

    tree: Any
    paths: list[str]
    dtype: str
    of: Callable
    fn: Callable
    covector: Callable
    token: Any = None


def complex_view(tree, where: str) -> ComplexView:
    """The real view of ``tree`` (identity maps where no leaf is complex)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = [leaf for _, leaf in flat]
    mask = [_is_complex(leaf) for leaf in leaves]
    paths = [jax.tree_util.keystr(p) or "(root)" for (p, _), m in zip(flat, mask, strict=True) if m]
    if not paths:
        return ComplexView(tree, [], "", lambda t: t, _real_outputs, lambda c, what, at: c)
    dtype = jnp.dtype(jnp.result_type(*[a for a, m in zip(leaves, mask, strict=True) if m])).name
    dtypes = [jnp.result_type(a) for a in leaves]

    def of(t):
        xs = treedef.flatten_up_to(t)
        out = []
        for x, m, dt in zip(xs, mask, dtypes, strict=True):
            if not m:
                out.append(x)
                continue
            if _is_complex(x):  # the complex step of a pair: the view is real only
                raise TypeError(f"{where}: the real pair of a complex leaf takes real values")
            out.append(jax.lax.complex(x[..., 0], x[..., 1]).astype(dt))
        return treedef.unflatten(out)

    token = ("complex", treedef, tuple(mask), tuple(str(d) for d in dtypes))

    def fn(g):
        return Bound(g, token, lambda p, *rest: pairs(g(of(p), *rest)))

    def covector(c, what, at):
        xs = treedef.flatten_up_to(c)
        out = []
        for (path, _), x, m in zip(flat, xs, mask, strict=True):
            if m and not _is_complex(x):
                raise TypeError(
                    f"{at}: {what}'s leaf {jax.tree_util.keystr(path)} has dtype "
                    f"{jnp.result_type(x)}; the parameter is complex, so its derivative is "
                    "(jax.grad's convention: df/dx - i df/dy)"
                )
            out.append(_conjugate_pair(x) if m else x)
        return treedef.unflatten(out)

    real = treedef.unflatten([_pair(a) if m else a for a, m in zip(leaves, mask, strict=True)])
    return ComplexView(real, paths, dtype, of, fn, covector, token)


def pairs(tree):
    """``tree`` with each complex leaf as its ``(Re, Im)`` pair (outputs, their tangents)."""
    return jax.tree_util.tree_map(lambda a: _pair(a) if _is_complex(a) else a, tree)


def _real_outputs(g: Callable) -> Callable:
    """``g`` with each complex output leaf returned as its ``(Re, Im)`` pair."""
    return Bound(g, ("complex outputs",), lambda *args: pairs(g(*args)))


def complex_outputs(out_shapes) -> list[bool]:
    """Which output leaves (``jax.eval_shape`` structs, in tree order) are complex."""
    return [_is_complex(a) for a in jax.tree_util.tree_leaves(out_shapes)]


def output_cotangent(cts, complex_mask, out_tree):
    """Real-view cotangents of the outputs (pairs at the complex ones) as the complex
    cotangents ``jax.vjp`` takes: ``(a, b) -> a - i b``."""
    leaves = out_tree.flatten_up_to(cts)
    return out_tree.unflatten([
        jax.lax.complex(c[..., 0], -c[..., 1]) if m else c
        for c, m in zip(leaves, complex_mask, strict=True)
    ])  # fmt: skip


def view_note(view: ComplexView, complex_out: bool = False) -> str:
    """What a report's description says of the real view (empty when nothing is complex)."""
    note = ""
    if view.paths:
        note += (f"; complex leaves {', '.join(view.paths)} ({view.dtype}) checked as real "
                 "pairs, last axis (Re, Im); gradients and VJPs there as (Re, -Im) = (d/dx, "
                 "d/dy)")  # fmt: skip
    if complex_out:
        note += "; complex outputs as real pairs (Re, Im)"
    return note


def through_view(view: ComplexView, fn: Callable | None) -> Callable | None:
    """``fn`` of the tree as a function of its real view (a ``pattern``); None for None."""
    if fn is None or not view.paths:
        return fn
    return Bound(fn, view.token, lambda p, *rest: fn(view.of(p), *rest))
