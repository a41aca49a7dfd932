r"""The screen: per-leaf verdicts on a research-scale tree from a few evaluations of ``f``.

Leaf by leaf, a verdict costs evaluations of ``f`` per leaf (a ladder, central differences
along ``k`` directions, retries where float32 cannot resolve a leaf): a transformer of 10M
parameters in 101 leaves took 4,953 evaluations, 30 times ``jax.test_util.check_grads``. The
screen tests many leaves with one directional derivative, and only the groups that fail are
split, down to the leaves that hold the error.

**One group, one direction.** For the leaves :math:`l \in G`, each gets a random block
:math:`\hat u_l` of unit max-norm, and the candidate's term along it is
:math:`C_l = s_l \langle g_l, \hat u_l \rangle` (:math:`s_l` the leaf's step scale,
:func:`~functional_nn.differences._estimates.leaf_scale`). The direction moves every leaf of
the group at once, :math:`V_l = a_l s_l \hat u_l` with

.. math:: a_l = \epsilon_l\, \mathrm{sign}(C_l) \min\!\left(1, \frac{r_l\, m}{|C_l|}\right),
    \quad m = \min_{l \in G} |C_l|, \quad \epsilon_l = \pm 1,\ r_l \in [\tfrac12, 1]
    \text{ at random,}

so every leaf contributes a term :math:`a_l C_l = \epsilon_l r_l m` of the same size,
whatever the size of its gradient (a layer-norm bias is not swamped by the embedding), and
no leaf moves further than its own step of the leaf-by-leaf engine. The candidate's
directional derivative :math:`\sum_l a_l C_l` is compared with central differences of ``f``
along :math:`V`, Richardson-extrapolated, **evaluated in float64** (``f`` traced again under
``jax.enable_x64``): float32 differences cannot resolve the term of a small leaf (48 of the
transformer's 101), float64 ones resolve it to :math:`10^{-5} m` (measured). A leaf whose
gradient is 5% off changes the sum by at least :math:`0.024\, m`; the bar is
``reference:complex_step`` (1e-4 in float32) times the norm of the terms, plus the
reference's own error bar, plus the candidate's float32 rounding (:math:`16 u \|g_l \odot
\hat u_l\|_2` per leaf): below :math:`0.005\, m` for a group of 64 leaves. Random signs and
sizes of the terms keep two wrong leaves from cancelling.

**Split what fails.** The leaves are sorted by :math:`|C_l|` and cut into groups of at most
:data:`GROUP_MAX`; each is tested along :data:`SCREEN_DIRECTIONS` directions (4 evaluations
each). A group that fails, or that the differences do not resolve (a bar above
:data:`RESOLVE` of :math:`m`), is halved and each half tested along a fresh direction, down
to single leaves: those, and the leaves whose candidate term is zero (:data:`NULL_BELOW`),
are the suspects, which the leaf-by-leaf engine checks in ``f``'s own dtype, with its
confirmation before failing. So the screen never fails a leaf itself: a function that is not
the same in float64 (a dropout mask drawn in the dtype) costs time, never a false failure.
A right gradient of 101 leaves costs 16 evaluations; one wrong leaf about 40 more and the
leaf-by-leaf engine on it.

The screen is used where it can be: ``f`` evaluates in float64 to a float64 scalar that
agrees with its own dtype's value to 1e-3. Else :func:`screen_grad` returns ``None`` and
every leaf is checked leaf by leaf.
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import x64
from functional_nn.checking._comparison import CheckRow
from functional_nn.checking._references import richardson_eps
from functional_nn.checking._tolerances import reference_bars
from functional_nn.differences._estimates import leaf_scale, richardson_ladder

SCREEN_ABOVE = 200_000
"""``check_grad`` screens a tree of more than this many parameters (and at least
:data:`SCREEN_LEAVES` leaves) unless told ``screen=False``."""

SCREEN_LEAVES = 4
"""Fewer leaves than this are checked leaf by leaf: a group of one or two saves nothing."""

GROUP_MAX = 64
"""Leaves in a first group: 64 keeps the bar of a group under a fifth of the smallest error
it must show (a 5% scale of one leaf in float32)."""

SCREEN_DIRECTIONS = 2
"""Directions per first group; halves get one each."""

NULL_BELOW = 1e-6
"""A leaf whose candidate term :math:`|C_l|` is below this fraction of the largest is a
suspect at once: a zero gradient (right for an unused leaf, wrong for a zeroed one) shows
nothing in a group."""

RESOLVE = {"float32": 5e-3, "float64": 1e-3}
"""A group's test counts only where its bar is below this fraction of :math:`m`, a fifth of
the smallest error the checker promises to catch (5% in float32, 1% in float64, times 1/2 for
:math:`r_l`)."""

AGREE = 1e-3
"""``f`` in float64 must agree with ``f`` in its own dtype to this relative difference."""


class Screen(NamedTuple):
    """What the screen found.

    Attributes:
        rows: a ``grad`` row for each leaf that passed in a group (by leaf index).
        suspects: the leaves for the leaf-by-leaf engine (sorted).
        groups: the groups tested; evaluations: the evaluations of ``f`` in float64.
    """

    rows: dict[int, CheckRow]
    suspects: list[int]
    groups: int
    evaluations: int


def screen_grad(f, params, value, g_leaves, dtype: str, seed: tuple, paths, tracker=None):
    """Screen the candidate gradient ``g_leaves`` of ``f`` at ``params`` (module docstring).

    Args:
        f: ``params -> real scalar``, of the checked (float) leaves only.
        params: the tree of those leaves; value: ``f(params)`` in its own dtype;
        g_leaves: the candidate, as its leaves.
        dtype: the leaves' dtype name (the promise: ``RESOLVE``, the bars).
        seed: ints that seed every direction; paths: the leaves' paths (for rows).
        tracker: optional :class:`~functional_nn.checking._progress.Tracker`.

    Returns:
        a :class:`Screen`, or ``None`` where ``f`` does not evaluate in float64 as itself.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    try:
        line = _Line(f, leaves, treedef)
    except Exception:  # noqa: BLE001 -- any failure to trace in float64: check leaf by leaf
        return None
    if not line.agrees(value):
        return None
    return _Bisection(line, g_leaves, dtype, seed, paths, tracker).run()


class _Line:
    r"""``f`` in float64 along a direction: :math:`t \mapsto f(\theta + t V)`, the point and
    the direction flat ``(P,)`` arrays on the device, one compiled program for every
    direction and step."""

    def __init__(self, f, leaves, treedef):
        shapes = tuple(tuple(jnp.shape(a)) for a in leaves)
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        with x64():
            self.flat = _flatten(leaves)
            self.seg = _segments(tuple(self.sizes))
            self.scales = _scales(self.flat, self.seg, len(leaves))
            self.zero = jnp.zeros_like(self.flat)
            try:  # one program per f: a second check of the same f compiles nothing
                hash(f)
                self.fn = functools.partial(_line_at, f, treedef, shapes)
            except TypeError:  # an f that cannot be a static argument: compiled for this check
                self.fn = jax.jit(functools.partial(_line, f, treedef, shapes))
            out = jax.eval_shape(self.fn, self.flat, self.zero, 0.0)
        if out.shape != () or out.dtype != jnp.float64:
            raise TypeError(f"f in float64 returns {out.dtype}{out.shape}")
        self.evaluations = 0

    def __call__(self, V, t: float) -> float:
        self.evaluations += 1
        with x64():
            return float(self.fn(self.flat, V, jnp.float64(t)))

    def agrees(self, value) -> bool:
        here = float(np.asarray(value, np.float64))
        wide = self(self.zero, 0.0)
        self.evaluations -= 1  # a check of the screen's premise, not a derivative
        self.zero = None
        return bool(np.isfinite(wide)) and abs(wide - here) <= AGREE * max(abs(wide), abs(here))


def _line(f, treedef, shapes, flat, V, t):
    """``f`` at ``flat + t V``, the flat vectors cut into the leaves."""
    moved, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        moved.append((flat[start : start + n] + t * V[start : start + n]).reshape(shape))
        start += n
    return f(jax.tree_util.tree_unflatten(treedef, moved))


_line_at = jax.jit(_line, static_argnums=(0, 1, 2))
""":func:`_line`, compiled once per ``f`` (equal functions share the program)."""


@jax.jit
def _flatten(leaves):
    return jnp.concatenate([jnp.ravel(jnp.asarray(a, jnp.float64)) for a in leaves])


def _segments(sizes: tuple[int, ...]) -> jax.Array:
    """The leaf of each entry of the flat vector, ``(P,)`` int32, made on the device."""
    ends = jnp.asarray(np.cumsum(sizes), jnp.int64)
    return _searched(ends, sum(sizes))


@functools.partial(jax.jit, static_argnums=1)
def _searched(ends, P: int):
    return jnp.searchsorted(ends, jnp.arange(P), side="right").astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=2)
def _scales(flat, seg, L: int):
    """Each leaf's step scale ``(L,)``
    (:func:`~functional_nn.differences._estimates.leaf_scale`; 1 for an empty leaf)."""
    return leaf_scale(jnp.maximum(jax.ops.segment_max(jnp.abs(flat), seg, L), 0.0), jnp)


@functools.partial(jax.jit, static_argnums=2)
def _units(key, seg, L: int):
    """A random direction of unit max-norm in every leaf, flat, float64 (one draw of all the
    entries)."""
    z = jax.random.normal(key, seg.shape, jnp.float64)
    top = jax.ops.segment_max(jnp.abs(z), seg, L)
    return z / jnp.where(top > 0, top, 1.0)[seg]


@functools.partial(jax.jit, static_argnums=5)
def _terms(units, scales, g_leaves, u_g, seg, L: int):
    r"""Per leaf: the candidate's term :math:`C_l = s_l \langle g_l, \hat u_l \rangle` and its
    rounding, :math:`16 u s_l \|g_l \odot \hat u_l\|_2`."""
    gu = _flatten(g_leaves) * units
    C = scales * jax.ops.segment_sum(gu, seg, L)
    rb = 16 * u_g * scales * jnp.sqrt(jax.ops.segment_sum(gu**2, seg, L))
    return C, rb


@jax.jit
def _direction(units, coef, seg):
    return coef[seg] * units


class _Outcome(NamedTuple):
    cand: float
    ref: float
    bar: float
    scale: float
    m: float


class _Bisection:
    """The groups, their tests and their splits (module docstring)."""

    def __init__(self, line: _Line, g_leaves, dtype: str, seed: tuple, paths, tracker):
        self.line, self.paths, self.tracker = line, list(paths), tracker
        self.g = list(g_leaves)
        self.dtype, self.seed = dtype, tuple(int(s) for s in seed)
        self.u_g = float(jnp.finfo(jnp.result_type(*self.g)).eps)
        bars = reference_bars(dtype)
        self.tol = bars["complex_step" if dtype == "float32" else "central"]
        self.h = richardson_eps(jnp.float64)
        self.scales = np.asarray(line.scales, np.float64)  # (L,), read once
        self.rng = np.random.default_rng([*self.seed, 7])

    def _along(self, level: int, j: int):
        word = np.random.default_rng([*self.seed, 11, level, j]).integers(2**31)
        key = jax.random.key(int(word))
        line, L = self.line, len(self.g)
        with x64():
            units = _units(key, line.seg, L)
            C, rb = _terms(units, line.scales, self.g, self.u_g, line.seg, L)
        return units, np.asarray(C), np.asarray(rb)

    def _test(self, members, along) -> _Outcome:
        units, C, rb = along
        scales = self.scales
        Cm = C[members]
        absC = np.abs(Cm)
        m = max(absC.min(), 1e-3 * np.median(absC))
        n = len(members)
        r = self.rng.uniform(0.5, 1.0, n) if n > 1 else np.ones(1)
        eps = self.rng.choice([-1.0, 1.0], n) if n > 1 else np.ones(1)
        a = np.sign(Cm) * eps * np.minimum(1.0, r * m / np.where(absC > 0, absC, np.inf))
        terms = a * Cm
        coef = np.zeros(len(self.g))
        coef[members] = a * scales[members]
        with x64():
            V = _direction(units, jnp.asarray(coef), self.line.seg)
        h = self.h
        plus = np.array([[self.line(V, 2 * h)], [self.line(V, h)]])
        minus = np.array([[self.line(V, -2 * h)], [self.line(V, -h)]])
        u64 = float(np.finfo(np.float64).eps)
        value, error = richardson_ladder(plus, minus, np.array([2 * h, h]), u64)
        bar = float(error[0]) + float(np.sum(np.abs(a) * rb[members]))
        return _Outcome(float(terms.sum()), float(value[0]), bar, float(np.linalg.norm(terms)), m)

    def _passes(self, outcomes) -> bool:
        for o in outcomes:
            if not o.bar <= RESOLVE[self.dtype] * o.m:
                return False  # the differences do not resolve the group's smallest term
            if not abs(o.cand - o.ref) - o.bar <= self.tol * o.scale:
                return False
        return True

    def _rows(self, members, outcomes, evaluations, seconds):
        """A ``grad`` row per leaf of a group that passed: its directional derivatives, the
        candidate's against float64 central differences, ``seconds`` the screen's time to
        the verdict."""
        cand = np.array([o.cand for o in outcomes])
        ref = np.array([o.ref for o in outcomes])
        excess = np.maximum(np.abs(cand - ref) - np.array([o.bar for o in outcomes]), 0.0)
        scale = max(o.scale for o in outcomes)
        error = float(excess.max() / scale) if scale > 0 else 0.0
        worst = float(np.abs(cand - ref).max())
        rel = worst / max(float(np.abs(ref).max()), 1e-300)
        return {l: CheckRow("grad", self.paths[l], (len(outcomes),), error, worst, rel, (), cand,
                            ref, self.tol, "pass", 0, evaluations, seconds)  # fmt: skip
                for l in members}  # fmt: skip

    def run(self) -> Screen:
        start = time.perf_counter()
        first = self._along(0, 0)
        C = np.abs(first[1])
        null = C <= NULL_BELOW * C.max(initial=0)
        suspects = [int(l) for l in np.flatnonzero(null | ~np.isfinite(C))]
        rest = np.array([l for l in np.argsort(C) if l not in set(suspects)], int)
        cuts = np.array_split(rest, -(-rest.size // GROUP_MAX)) if rest.size else []
        pending = [tuple(int(x) for x in g) for g in cuts]
        rows: dict[int, CheckRow] = {}
        groups, level = 0, 0
        while pending:
            n_dir = SCREEN_DIRECTIONS if level == 0 else 1
            outcomes: dict[tuple, list] = {g: [] for g in pending}
            for j in range(n_dir):
                along = first if (level, j) == (0, 0) else self._along(level, j)
                for g in pending:
                    if self.tracker is not None:
                        self.tracker.leaf(g[0])
                    outcomes[g].append(self._test(np.array(g), along))
                    if self.tracker is not None:
                        self.tracker(self.line.evaluations, "screen")
                del along
            first = None
            groups += len(pending)
            seconds = time.perf_counter() - start
            split = []
            for g in pending:
                if self._passes(outcomes[g]):
                    rows.update(self._rows(g, outcomes[g], 4 * n_dir, seconds))
                elif len(g) == 1:
                    suspects.append(g[0])
                else:
                    split += [g[: len(g) // 2], g[len(g) // 2 :]]
            pending, level = split, level + 1
        return Screen(rows, sorted(suspects), groups, self.line.evaluations)


def screening(screen: bool | None, P: int, L: int) -> bool:
    """Whether ``check_grad`` screens: as told, or (``None``) above :data:`SCREEN_ABOVE`
    parameters in at least :data:`SCREEN_LEAVES` leaves."""
    if screen is None:
        return P > SCREEN_ABOVE and L >= SCREEN_LEAVES
    return bool(screen)


def screen_note(screened, paths) -> str:
    """What the screen did, for the report's description."""
    alone = ", ".join(paths[l] for l in screened.suspects) or "none"
    return (f"; screened: {len(screened.rows)} leaves passed in {screened.groups} groups "
            f"(float64, {screened.evaluations} evaluations, no Taylor row), checked leaf by "
            f"leaf: {alone}")  # fmt: skip
