r"""References for the derivatives of any function, leaf by leaf, most exact first.

A checker compares a derivative it is given (``jax.grad(f)``, a hand-derived gradient, a VJP
rule) with a reference that does not share its code. Every reference here is a derivative
along directions that are blocks of one leaf (:class:`Directions`): ``f`` is evaluated with
that leaf moved (:class:`~functional_nn.differences._blocks.LeafFunction`), never along a
vector of the whole tree. In the order a checker prefers them:

1. **Autodiff of the primal** of a top-level ``jax.custom_vjp`` / ``jax.custom_jvp``
   (:func:`custom_primal`): exact, where that primal is differentiable (finite derivatives).
2. **The complex step** :math:`\operatorname{Im} f(\theta + \mathrm{i} h v) / h`, wherever
   ``f`` stays complex-analytic in the leaf: detected (an error or a real output means it
   does not) and validated once per leaf (:meth:`LeafReferences.complex_ok`) against the
   Richardson estimate of a ladder of central differences along one random direction of the
   leaf, within that estimate's own error bar
   (:func:`~functional_nn.differences._estimates.complex_agrees`), with a silent fallback.
3. **Central differences with Richardson extrapolation** along each direction: :math:`D(h)`
   and :math:`D(2h)` give :math:`R = (4 D(h) - D(2h)) / 3` with the bar
   :math:`|D(h) - D(2h)| + 16\, u \max|f| / h`, so that a comparison never fails on the
   reference's noise (the float32 verdict).

The ladder of one leaf (:meth:`LeafReferences.ladder`) is shared: its points are the Taylor
remainder test of ``check_grad``, the central estimate that validates the complex step, and
the reference along its own direction. Differences are taken on the host in float64, and the
unit roundoff that sets every floor is that of the *output* when it is less precise than the
parameters (a float32 result of float64 inputs has float32's rounding).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._compile import shared_jit
from functional_nn.checking._directions import LeafDirections, PickedDirections, leaf_directions
from functional_nn.checking._tolerances import TOLERANCES
from functional_nn.differences._blocks import ComplexRefusedError, LeafFunction
from functional_nn.differences._estimates import (
    ROUNDING,
    central,
    complex_agrees,
    complex_step,
    crossed_kink,
    leaf_scale,
    measured_noise,
    richardson_ladder,
    rounding_floor,
    step_scale,
)

# -- what a reference is made of: the directions of one leaf, the derivatives along them with
# their bars, the ladder along one direction, and when central differences resolve a leaf --

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


# -- the references, leaf by leaf ---------------------------------------------------------------


def custom_primal(f: Callable) -> Callable | None:
    """The primal function of a top-level ``jax.custom_vjp`` or ``jax.custom_jvp``, or None.

    Its autodiff never runs the custom rule, so it is an exact, independent reference for the
    rule (where the primal is differentiable: the caller checks its derivatives are finite).
    """
    if isinstance(f, (jax.custom_vjp, jax.custom_jvp)) and not f.nondiff_argnums:
        return f.fun
    return None


def exact_jvps(g, lf: LeafFunction):
    """For a top-level custom rule: ``(l, directions) -> (n, m)`` by ``jax.jvp`` of its
    primal, only leaf ``l`` moved (and batched)."""
    primal = custom_primal(g)
    if primal is None:
        return None

    def exact(l, d):
        leaf = lf.leaves[l]
        if d.index is not None:
            V = np.eye(int(np.size(leaf)), dtype=jnp.result_type(leaf))[d.index]
            V = V.reshape(d.n, *np.shape(leaf))
        else:
            V = d.blocks

        def h(x):
            return lf.flat(primal(lf.params_with(l, x)))

        jvps = jax.vmap(lambda v: jax.jvp(h, (leaf,), (v,))[1])(jnp.asarray(V))
        return np.asarray(jvps, np.float64)

    return exact


def params_dtype(params: Any, where: str) -> str:
    """The name of the params' floating dtype (float16 to float64), or a ``ValueError``."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{where}: params has no leaves: nothing to check")
    return jnp.dtype(jnp.result_type(*leaves)).name


def check_dtype(params: Any, where: str) -> str:
    """The name of the params' dtype, float32 or float64, or a ``ValueError``."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{where}: params has no leaves: nothing to check")
    name = jnp.dtype(jnp.result_type(*leaves)).name
    if name in TOLERANCES:
        return name
    if jnp.issubdtype(name, jnp.complexfloating):
        raise ValueError(
            f"{where}: params of dtype {name}; the engine takes real leaves (float32 or "
            "float64): check_grad, check_vjp and check_jvp give it complex ones as (Re, Im) pairs"
        )
    hint = ""
    if not jax.config.jax_enable_x64:
        hint = (" (for float64, enable x64 at the start of the process: "
                "jax.config.update('jax_enable_x64', True))")  # fmt: skip
    raise ValueError(f"{where}: params of dtype {name}; expected float32 or float64{hint}")


def bars_dtype(dtype: str, out_dtype) -> str:
    """The dtype whose bars hold: the parameters', or the output's where it is less precise
    (``lax.mul(..., preferred_element_type=float32)`` of float64 inputs is a float32 result)."""
    out = jnp.dtype(out_dtype)
    if jnp.issubdtype(out, jnp.inexact) and jnp.finfo(out).eps > jnp.finfo(dtype).eps:
        return "float32"
    return dtype


@functools.lru_cache(maxsize=128)
def _jit(fn):
    return shared_jit(fn)


def jitted(fn: Callable) -> Callable:
    """``jax.jit(fn)`` for values, one wrapper per (equal) function, so later calls reuse its
    trace, and its compiled program shared with every function of the same structure
    (:func:`~functional_nn._compile.shared_jit`: a check of a closure made afresh, the same
    loss at other data, compiles nothing again)."""
    try:
        return _jit(fn)
    except TypeError:  # unhashable (a callable object that sets __hash__ = None): afresh
        return shared_jit(lambda *args: fn(*args))


class LeafReferences:
    """The references of one function at one point, leaf by leaf (see the module docstring).

    Args:
        lf: the function with one leaf moved.
        dtype: the parameters' dtype name; the bars and floors follow :func:`bars_dtype`.
        seed: ints seeding every random direction (``(seed, leaf, purpose)``: independent of
            the order in which leaves are checked).
        exact: optional ``(l, directions) -> (n, m)``: autodiff of a custom rule's primal.
        complex_blocks: whether random directions may take the complex step. At research
            scale the checkers say no: central differences evaluate ``f`` in real
            arithmetic only (a complex evaluation costs about four real ones, and compiles
            every op of ``f`` a second time), four points per direction, one chunk for four
            directions; unit directions keep the validated complex step, and so does a leaf
            that central differences do not resolve (:data:`RESOLVES`).
    """

    def __init__(
        self,
        lf: LeafFunction,
        dtype: str,
        seed: tuple,
        exact: Callable | None = None,
        complex_blocks: bool = True,
    ):
        self.lf, self.seed, self.exact = lf, tuple(seed), exact
        self.complex_blocks = complex_blocks
        self.dtype = bars_dtype(dtype, lf.out_dtype)
        self.u = float(jnp.finfo(self.dtype).eps)
        self.bars = {k[len("reference:") :]: v for k, v in TOLERANCES[self.dtype].items()
                     if k.startswith("reference:")}  # fmt: skip
        self._ladders: dict[int, Ladder] = {}
        self._complex: dict[int, bool] = {}
        self._abs_max: dict[int, float] = {}
        self._noise: dict[int, np.ndarray] = {}

    def rng(self, l: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([*self.seed, l, purpose])

    def scale(self, l: int) -> float:
        """:math:`\\max|\\theta_l|` (1 for zeros): the step scale of a dense direction of leaf l
        (:func:`~functional_nn.differences._estimates.leaf_scale`)."""
        if l not in self._abs_max:
            leaf = self.lf.leaves[l]
            self._abs_max[l] = float(jnp.max(jnp.abs(leaf))) if jnp.size(leaf) else 0.0
        return float(leaf_scale(self._abs_max[l]))

    def random(self, l: int, k: int, purpose: int = 1) -> Directions:
        """``k`` random directions of unit max-norm in leaf ``l``."""
        leaf = self.lf.leaves[l]
        return Directions(blocks=leaf_directions((*self.seed, l, purpose), leaf, k))

    # -- evaluations along directions -------------------------------------------------------

    def along(self, l: int, d: Directions, ts: np.ndarray, label: str = ""):
        """``f`` at :math:`\\theta_l + t_k s_j v_j`: ``(values (n, K, m), steps (n, K),
        crossed (n,))``, ``steps`` those actually taken along unit directions (exact)."""
        leaf = self.lf.leaves[l]
        shape, dtype = jnp.shape(leaf), jnp.result_type(leaf)
        ts = np.asarray(ts)
        K, n = ts.size, d.n
        is_complex = bool(np.iscomplexobj(ts))
        if d.index is not None:
            theta = np.asarray(leaf).ravel()[d.index]
            scale = np.asarray(step_scale(np.abs(theta)), np.float64)
            size = math.prod(shape)

            def deltas(i):
                j, kk = i // K, i % K
                out = np.zeros((i.size, size), np.result_type(dtype, ts.dtype))
                out[np.arange(i.size), d.index[j]] = ts[kk] * scale[j]
                return out.reshape(i.size, *shape)

            if is_complex:
                steps = ts[None, :] * scale[:, None]
            else:  # the step actually taken, in the leaf's dtype
                t = np.asarray(theta, dtype)[:, None]
                steps = ((t + (ts[None, :] * scale[:, None]).astype(dtype)) - t).astype(np.float64)
        else:
            s = self.scale(l)
            blocks = d.blocks

            def deltas(i):
                j, kk = i // K, i % K
                coef = (ts[kk] * s).reshape(-1, *([1] * len(shape)))
                unique, where = np.unique(j, return_inverse=True)
                return blocks.blocks(unique)[where] * coef

            steps = np.broadcast_to(ts[None, :] * s, (n, K))
        values, changed = self.lf.evaluate(l, deltas, n * K, is_complex, label)
        return values.reshape(n, K, -1), steps, changed.reshape(n, K).any(axis=1)

    def ladder(self, l: int) -> Ladder:
        """The ladder of leaf ``l`` along its first random direction (that of
        :meth:`random`'s direction 0, so the two share their points): made once."""
        if l not in self._ladders:
            v = self.random(l, 1)
            hs = ladder_steps(self.dtype) * self.scale(l)
            ts = np.concatenate([hs, -hs]) / self.scale(l)
            before = self.lf.evaluations
            values, _, crossed = self.along(l, v, ts, "ladder")
            J = hs.size
            self._ladders[l] = Ladder(v, hs, values[0, :J], values[0, J:], bool(crossed[0]),
                                      self.lf.evaluations - before)  # fmt: skip
        return self._ladders[l]

    def complex_ok(self, l: int, cs: Reference | None = None) -> bool:
        """Whether the complex step serves leaf ``l``: ``f`` takes the leaf complex, and the
        step along the ladder's direction (``cs.value[0]`` when ``cs`` holds it already)
        agrees with the ladder's central estimate, within its error bar and
        ``bars["central"]``. Made once per leaf."""
        if l not in self._complex:
            ok = self.lf.pattern is None and self.lf.accepts_complex(l)
            if ok:
                lad = self.ladder(l)
                try:
                    along_v = cs.value[:1] if cs is not None else self.complex(l, lad.v).value
                except ComplexRefusedError:  # f traced at complex points and failed to run there
                    self._complex[l] = False
                    return False
                value, error = richardson_ladder(lad.plus[None], lad.minus[None], lad.hs[None],
                                                 self.u)  # fmt: skip
                ok = lad.crossed or bool(complex_agrees(along_v, value, error,
                                                        self.bars["central"]))  # fmt: skip
            self._complex[l] = ok
        return self._complex[l]

    # -- estimates -----------------------------------------------------------------------------

    def complex(self, l: int, d: Directions) -> Reference:
        values, steps, _ = self.along(l, d, np.array([1j * self.u]), "complex step")
        value, error = complex_step(np.imag(values[:, 0, :]), np.imag(steps[:, :1]), self.u)
        return Reference("complex_step", value, error, None, d.n)

    def central(self, l: int, d: Directions) -> Reference:
        r"""Richardson-extrapolated central differences along ``d``: :math:`D(2h)` and
        :math:`D(h)` at the relative step :func:`richardson_eps`, 4 evaluations each.

        Along dense directions, a leaf they do not resolve (:data:`RESOLVES`: the bar
        :math:`|D(h) - D(2h)|` plus the assumed rounding floor could hide the smallest error
        the checkers promise to catch) gets two more
        rungs, 4 times larger where the floor dominates the bar and 4 times smaller where the
        truncation does, and the noise of ``f`` measured along the leaf
        (:meth:`noise`): the four rungs give Ridders' estimate, trusted only where they show
        the :math:`h^2` law, with the measured floor; the estimate with the smaller bar is
        kept. The same shapes, the same program: a retry costs evaluations, not compiles."""
        eps = richardson_eps(self.dtype)
        plus, minus, hs, crossed = self._pairs(l, d, np.array([2 * eps, eps]))
        value, error = richardson_ladder(plus, minus, hs, self.u)
        crossed = crossed if self.lf.pattern is not None else None
        ref = Reference("central", value, error, crossed, 4 * d.n)
        if d.blocks is None or self.lf.pattern is not None or self.resolves(ref):
            return ref
        before = self.lf.evaluations
        noise = self.noise(l)
        fmax = np.maximum(np.abs(plus[:, 1]), np.abs(minus[:, 1]))
        floor = np.max(rounding_floor(fmax, hs[:, 1:], self.u), initial=0)
        larger = floor >= np.max(np.ptp(central(plus, minus, hs[..., None]), axis=1), initial=0)
        more = np.array([8 * eps, 4 * eps] if larger else [eps / 2, eps / 4])
        p2, m2, h2, _ = self._pairs(l, d, more)
        order = (lambda a, b: np.concatenate([b, a], axis=1)) if larger else (
            lambda a, b: np.concatenate([a, b], axis=1))  # fmt: skip
        ridders = richardson_ladder(order(plus, p2), order(minus, m2), order(hs, h2), self.u,
                                    noise=noise)  # fmt: skip
        two = richardson_ladder(plus, minus, hs, self.u, noise=noise)
        spent = 4 * d.n + self.lf.evaluations - before
        refs = (Reference("central", *e, None, spent) for e in (two, ridders))
        best = min(refs, key=relative_bar)
        return best if relative_bar(best) < relative_bar(ref) else ref._replace(evaluations=spent)

    def confirm(self, l: int, d: Directions, ref: Reference, failing) -> Reference:
        r"""``ref`` with the directions it would fail (``failing``, ``(n,)`` bool) estimated
        again before they do, where ``ref`` is central differences and no ``pattern`` names
        the kinks: a ladder of six rungs, :math:`8\varepsilon` down to
        :math:`\varepsilon / 4` (:func:`richardson_eps`), and Ridders' rule with the measured
        noise (:meth:`noise`), trusted only where the rungs show the :math:`h^2` law, else
        an infinite bar. A wrong derivative stays wrong on every rung and fails; a jump the
        first step crossed (``atan2`` across its branch cut, a dense direction moving an
        entry 0.04 from it) or a function too fast for it shows no :math:`h^2` law, and a kink
        every rung crossed (a ReLU unit 2e-4 from its kink in float32: the rungs read the
        average slope, converged) shows second differences of order 1
        (:func:`~functional_nn.differences._estimates.crossed_kink`): those directions are
        not judged, and ``crossed`` marks them, so the report counts them as left out.
        Costs 13 more evaluations per failing direction, nothing when none fails."""
        failing = np.asarray(failing, bool)
        if ref.name != "central" or self.lf.pattern is not None or not failing.any():
            return ref
        before = self.lf.evaluations
        js = np.flatnonzero(failing)
        noise = self.noise(l)
        ts = richardson_eps(self.dtype) * 2.0 ** np.arange(3, -3, -1)
        sub = d.subset(js)
        plus, minus, hs, _ = self._pairs(l, sub, ts)
        value, error = richardson_ladder(plus, minus, hs, self.u, noise=noise, consistent=True)
        f0 = self.along(l, sub.subset([0]), np.zeros(1), "f0")[0][0, 0].real
        kinked = crossed_kink(plus, minus, f0, hs, self.u)
        values, errors = ref.value.copy(), ref.error.copy()
        values[js], errors[js] = value, error
        crossed = np.zeros(d.n, bool)  # left out: a kink crossed, or no h^2 law to trust
        crossed[js] = kinked | ~np.all(np.isfinite(error), axis=-1)
        spent = (ref.evaluations or 0) + self.lf.evaluations - before
        return ref._replace(value=values, error=errors, crossed=crossed, evaluations=spent)

    def resolves(self, ref: Reference) -> bool:
        """Whether ``ref``'s bar is within :data:`RESOLVES` of its largest derivative."""
        return relative_bar(ref) <= RESOLVES[self.dtype]

    def _pairs(self, l: int, d: Directions, ts: np.ndarray):
        """``f`` at :math:`\\theta_l \\pm t s v` for the relative steps ``ts`` (largest first):
        ``(plus (n, J, m), minus (n, J, m), steps taken (n, J), crossed (n,))``."""
        values, steps, crossed = self.along(l, d, np.concatenate([ts, -ts]), "central")
        J = ts.size
        hs = (steps[:, :J] - steps[:, J:]) / 2
        return values[:, :J].real, values[:, J:].real, hs, crossed

    def noise(self, l: int) -> np.ndarray:
        """The rounding noise of ``f`` along leaf ``l``'s first random direction, ``(m,)``:
        16 points at steps of :math:`16 k u s` (:math:`k = -7 .. 8`), where ``f`` is
        quadratic far below its rounding
        (:func:`~functional_nn.differences._estimates.measured_noise`). Made once per leaf."""
        if l not in self._noise:
            ts = 16 * self.u * np.arange(-7, 9, dtype=np.float64)
            values, steps, _ = self.along(l, self.random(l, 1), ts, "noise")
            self._noise[l] = measured_noise(steps[0], values[0].real, self.u)
        return self._noise[l]

    def reference(self, l: int, d: Directions) -> Reference:
        """The derivatives of ``f`` along ``d`` in leaf ``l`` from the most exact reference."""
        if self.exact is not None:
            value = np.asarray(self.exact(l, d), np.float64)
            if np.all(np.isfinite(value)):
                return Reference("autodiff of the primal", value, np.zeros_like(value), None, None)
        blocks_central = d.blocks is not None and not self.complex_blocks
        if not blocks_central and self.lf.pattern is None and self.lf.accepts_complex(l):
            if l in self._complex:
                if self._complex[l]:
                    return self.complex(l, d)
            else:
                first = d.blocks is not None and d.blocks.seed == (*self.seed, l, 1)
                try:
                    cs = self.complex(l, d)
                except ComplexRefusedError:  # falls back to central differences, and says so
                    self._complex[l] = False
                else:
                    if self.complex_ok(l, cs if first else None):
                        return cs
        ref = self.central(l, d)
        if (blocks_central and self.lf.pattern is None and not self.resolves(ref)
                and self.lf.accepts_complex(l) and self.complex_ok(l)):  # fmt: skip
            return self.complex(l, d)  # rounding swamps central: the complex step has none
        return ref
