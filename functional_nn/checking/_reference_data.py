r"""What a reference is made of: the directions of one leaf, the derivatives along them with
their bars, the ladder along one direction, and when central differences *resolve* a leaf.

The data of :mod:`functional_nn.checking._references`, which makes them, and of the front doors
(:mod:`~functional_nn.checking._scalar_check`, :mod:`~functional_nn.checking._vjp_check`),
which compare them and name them in their reports (:func:`reference_name`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from functional_nn.checking._directions import LeafDirections, PickedDirections
from functional_nn.differences._estimates import ROUNDING

LADDER = 8
"""Steps of a leaf's ladder (each taken both ways): relative steps from 0.5 down to
:math:`10 \\sqrt u`, geometric."""


def ladder_steps(dtype) -> np.ndarray:
    """The relative steps of a ladder, largest first: 0.5 down to :math:`10 \\sqrt u` (below,
    the Taylor remainder :math:`O(h^2)` sinks under rounding :math:`O(u |f|)` for any
    curvature)."""
    u = float(jnp.finfo(dtype).eps)
    return np.logspace(np.log10(0.5), np.log10(10 * np.sqrt(u)), LADDER)


def richardson_eps(dtype) -> float:
    r"""The relative step of Richardson-extrapolated central differences, :math:`u^{1/5}`:
    truncation :math:`O(h^4)` and rounding :math:`O(u/h)` balance there."""
    return float(jnp.finfo(dtype).eps) ** 0.2


class Directions(NamedTuple):
    """Directions in one leaf: the unit vectors :math:`e_i` of some of its entries
    (``index``, flat positions) or ``n`` dense blocks of its shape (``blocks``, unit
    max-norm)."""

    index: np.ndarray | None = None
    blocks: LeafDirections | None = None

    @property
    def n(self) -> int:
        return len(self.index) if self.index is not None else self.blocks.k

    def along(self, g_leaf) -> np.ndarray:
        """``<g, v>`` for each direction, ``g_leaf`` a leaf-shaped array: ``(n,)`` float64,
        the directions made a chunk at a time."""
        g = np.asarray(g_leaf, np.float64).ravel()
        if self.index is not None:
            return g[self.index]
        out = np.empty(self.n)
        for start in range(0, self.n, 8):
            js = range(start, min(start + 8, self.n))
            out[start : start + len(js)] = self.blocks.blocks(js).reshape(len(js), -1) @ g
        return out

    def rounding(self, g_leaf) -> np.ndarray:
        r"""The rounding a candidate ``g_leaf`` carries into :meth:`along`, ``(n,)``:
        ``ROUNDING`` times its dtype's :math:`u` times :math:`\sum_i |g_i v_i|`. Along a
        dense direction of a large leaf, :math:`\langle g, v \rangle` cancels: the sum of
        magnitudes is about :math:`\sqrt{n}` times the dot product, and a float32 gradient,
        right to its last bits, is off by more than a complex step's bar of it (a 65,536-entry
        attention weight in float32: 1.05e-4 against 1e-4, one direction of four). Along
        unit directions it is :math:`16 u |g_i|`, far below every bar."""
        u = float(jnp.finfo(jnp.result_type(g_leaf)).eps)
        g = np.abs(np.asarray(g_leaf, np.float64).ravel())
        if self.index is not None:
            return ROUNDING * u * g[self.index]
        out = np.empty(self.n)
        for start in range(0, self.n, 8):
            js = range(start, min(start + 8, self.n))
            out[start : start + len(js)] = np.abs(self.blocks.blocks(js).reshape(len(js), -1)) @ g
        return ROUNDING * u * out

    def subset(self, js) -> Directions:
        """Directions ``js`` of these (ints)."""
        js = np.asarray(js, int)
        if self.index is not None:
            return Directions(index=self.index[js])
        return Directions(blocks=PickedDirections(self.blocks, js))

    def dense(self, start: int, stop: int) -> np.ndarray:
        """Directions ``start .. stop-1`` as blocks ``(stop - start, *shape)``."""
        if self.blocks is not None:
            return self.blocks.blocks(range(start, stop))
        raise ValueError("unit directions have no dense blocks")


class Reference(NamedTuple):
    """Derivatives along directions from the most exact reference available.

    Attributes:
        name: ``"autodiff of the primal"``, ``"complex_step"`` or ``"central"``.
        value, error: ``(n, m)``: the derivatives and their own error bar.
        crossed: ``(n,)``: the steps that changed the pattern (kinks), or None.
        evaluations: evaluations of ``f`` made (None for autodiff).
    """

    name: str
    value: np.ndarray
    error: np.ndarray
    crossed: np.ndarray | None
    evaluations: int | None


class Ladder(NamedTuple):
    """``f`` at :math:`\\theta \\pm h_j v` along one random direction ``v`` of a leaf."""

    v: Any
    hs: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    crossed: bool
    evaluations: int


RESOLVES = {"float32": 2.5e-2, "float64": 5e-3}
"""Central differences resolve a leaf when their bar is at most this fraction of the largest
derivative: half the smallest error the checkers promise to catch (5% of a leaf in float32,
1% in float64). A leaf whose share of ``f`` sinks under ``f``'s rounding (a 10-entry leaf
beside a 20,000-entry one whose gradient is 1e5 times larger, in float32) is not, even after
more steps and a measured floor, and takes the complex step where it is valid even at
research scale."""


def failing(a, ref, err, tol, keep=None) -> np.ndarray:
    """Which of ``a`` (``(n, ...)``, a candidate's derivatives along ``n`` directions) fail
    against ``ref`` known to within ``err``, as a row fails them
    (:func:`~functional_nn.checking._comparison.row_within`): ``|a - ref| - err`` beyond
    ``tol`` times the largest magnitude of either. ``(n,)`` bool; ``keep``: ``(n,)``, the
    directions compared (the others never fail)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    n = a.shape[0] if a.ndim else 1
    a, ref = a.reshape(n, -1), ref.reshape(n, -1)
    err = np.broadcast_to(np.asarray(err, np.float64).reshape(n, -1), a.shape)
    keep = np.ones(n, bool) if keep is None else np.asarray(keep, bool)
    scale = max(np.abs(a[keep]).max(initial=0), np.abs(ref[keep]).max(initial=0))
    excess = np.maximum(np.abs(a - ref) - err, 0.0)
    bad = (excess > tol * scale) | np.isnan(a - ref)
    return keep & bad.any(axis=1)


def relative_bar(ref: Reference) -> float:
    """The largest bar relative to the largest derivative (inf for no derivative)."""
    scale = float(np.abs(ref.value).max(initial=0))
    worst = float(ref.error.max(initial=0))
    return worst / scale if scale > 0 else (np.inf if worst > 0 else 0.0)


EXACTNESS = ("autodiff of the primal", "complex_step", "central (float64)", "central")
"""The references, most exact first."""


def reference_name(names: Iterable[str]) -> str:
    """The reference a report names: the one every leaf used, or those used joined by
    ``" + "``, most exact first (``"complex_step + central"``: a leaf of the tree takes the
    complex step, another central differences). ``"-"`` for none."""
    used = set(names)
    return " + ".join(n for n in EXACTNESS if n in used) or "-"


def refused_note(lf, paths: list[str]) -> str:
    """The description's note on leaves where ``f`` traced at complex points and failed to run
    there (a Pallas kernel, a callback): central differences served them instead."""
    if not lf.refused:
        return ""
    where = ", ".join(paths[l] for l in sorted(lf.refused))
    reason = next(iter(lf.refused.values()))
    return f"; complex step refused by f ({reason}) at {where}: central differences there instead"
