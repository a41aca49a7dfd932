r"""References for the derivatives of any function, most exact first.

A checker compares a derivative it is given (``jax.grad(f)``, a hand-derived gradient, a VJP
rule) with a reference that does not share its code. Here are the references, in the order
a checker prefers them:

1. **Autodiff of the primal** of a top-level ``jax.custom_vjp`` / ``jax.custom_jvp``
   (:func:`custom_primal`): exact, where that primal is differentiable (finite derivatives).
2. **The complex step** :math:`\operatorname{Im} f(\theta + \mathrm{i} h v) / h`, wherever
   ``f`` stays complex-analytic: detected (:func:`accepts_complex`; an error or a real output
   means it does not) and validated against central differences along a direction before it
   is trusted (:func:`~functional_nn.differences._complex.complex_step_agrees` for the same reason),
   with a silent fallback.
3. **Central differences with Richardson extrapolation**: :math:`D(h)` and :math:`D(2h)`
   give :math:`R = (4 D(h) - D(2h)) / 3`, error :math:`O(h^4)`, and :math:`|D(h) - D(2h)|`
   plus the rounding floor :math:`16\, u \max|f| / h` as its own error bar, so that a
   comparison never fails on the reference's noise (the float32 verdict).

Every estimate is a set of evaluations of ``f`` at :math:`\theta + t\, s_j v_j` for
directions :math:`v_j` and relative steps :math:`t` (:func:`evaluate_along`): one compiled
program per function, structure and kind of direction (unit vectors :math:`e_i`, or random
ones drawn per leaf), shared by every scheme and reused by every later call. Differences
are taken on the host in float64, so a float32 ``f`` loses nothing more in the subtraction.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn.checking._tolerances import TOLERANCES
from functional_nn.differences._flat import unraveler

VMAP_UP_TO = 256
"""Up to this many evaluations at once, one plain ``vmap`` (the smallest program); beyond, a
``lax.map`` over chunks of :data:`CHUNK` directions bounds the memory."""
CHUNK = 32


class FlatFunction(NamedTuple):
    """A function of a pytree as a function of one vector: ``fn(theta, *args) -> (m,)``.

    Attributes:
        theta: the flattened parameters ``(P,)``, on the host (NumPy: no eager JAX op, each
            of which would compile a program of its own, runs outside the compiled ones).
        unravel: ``(P,) -> pytree``, keeping the dtype it is given (complex stays complex).
        fn: the flattened function; its output is raveled to ``(m,)``.
        key: a hashable stand-in for the function, under which compiled programs are cached.
        structure: the tree structure and leaf shapes, also part of the cache key.
    """

    theta: np.ndarray
    unravel: Callable
    fn: Callable
    key: Any
    structure: Any


def flatten_function(f: Callable, params: Any, key: Any = None) -> FlatFunction:
    """``f(params, *args)`` (any pytree of arrays out, raveled and concatenated in tree order)
    as :class:`FlatFunction`; ``key`` defaults to ``f`` itself (give
    an equal key for equal functions built afresh, e.g. ``("objective", net, loss)``)."""
    unravel = unraveler(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    dtype = np.result_type(*[np.asarray(a).dtype for a in leaves])
    theta = np.concatenate([np.ravel(np.asarray(a)) for a in leaves]).astype(dtype)  # host
    structure = (treedef, tuple(np.shape(a) for a in leaves), dtype.name)

    def fn(t, *args):
        out = jax.tree_util.tree_leaves(f(unravel(t), *args))
        return jnp.concatenate([jnp.reshape(a, (-1,)) for a in out])

    return FlatFunction(theta, unravel, fn, f if key is None else key, structure)


def custom_primal(f: Callable) -> Callable | None:
    """The primal function of a top-level ``jax.custom_vjp`` or ``jax.custom_jvp``, or None.

    Its autodiff never runs the custom rule, so it is an exact, independent reference for the
    rule (where the primal is differentiable: the caller checks its derivatives are finite).
    """
    if isinstance(f, (jax.custom_vjp, jax.custom_jvp)) and not f.nondiff_argnums:
        return f.fun
    return None


def accepts_complex(flat: FlatFunction, *args) -> bool:
    """Whether ``f`` takes complex parameters and returns a complex output (trace only).

    Necessary for the complex step, not sufficient: a function can return complex and not be
    analytic; the checkers validate the step numerically before they trust it.
    """
    z = jax.ShapeDtypeStruct(flat.theta.shape, jnp.result_type(flat.theta.dtype, 1j))
    try:
        out = jax.eval_shape(flat.fn, z, *args)
    except Exception:  # noqa: BLE001 -- any failure on complex input means "no complex step"
        return False
    return bool(jnp.issubdtype(out.dtype, jnp.complexfloating))


def richardson_eps(dtype) -> float:
    r"""The relative step of Richardson-extrapolated central differences, :math:`u^{1/5}`:
    truncation :math:`O(h^4)` and rounding :math:`O(u/h)` balance there."""
    return float(jnp.finfo(dtype).eps) ** 0.2


_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_MAX_PROGRAMS = 128


def _program(key, structure, unit: bool, pattern_key, fn, pattern):
    """One compiled evaluation program per function key, structure and direction kind (an
    equal key reuses the program of an equal function built afresh); jit's own cache then keeps
    one executable per shape (number of directions and steps)."""
    cache_key = (key, structure, unit, pattern_key)
    try:
        hit = _PROGRAMS.get(cache_key)
    except TypeError:  # an unhashable key: compile afresh
        return _build_program(unit, fn, pattern)
    if hit is None:
        hit = _PROGRAMS[cache_key] = _build_program(unit, fn, pattern)
        if len(_PROGRAMS) > _MAX_PROGRAMS:
            _PROGRAMS.popitem(last=False)
    return hit


def _build_program(unit, fn, pattern):

    def evaluate(theta, directions, ts, scale, args):
        base = pattern(theta, *args) if pattern is not None else None

        def one(d, s):
            v = jnp.zeros_like(theta).at[d].set(1) if unit else d
            points = theta[None, :] + (ts * s)[:, None] * v[None, :]  # (K, P)
            steps = ts * s
            if unit and not jnp.iscomplexobj(points):  # the step actually taken: exact
                steps = points[:, d] - theta[d]
            values = jax.vmap(lambda p: fn(p, *args))(points)  # (K, m)
            crossed = jnp.zeros((), bool)
            if base is not None:
                changed = jax.vmap(lambda p: jnp.any(pattern(jnp.real(p), *args) != base))(points)
                crossed = jnp.any(changed)
            return values, steps, crossed

        n, K = directions.shape[0], ts.shape[0]
        if n * K <= VMAP_UP_TO:
            return jax.vmap(one)(directions, scale)
        return jax.lax.map(lambda ds: one(*ds), (directions, scale), batch_size=CHUNK)

    return jax.jit(evaluate)


def evaluate_along(
    flat: FlatFunction,
    directions: jax.Array,
    ts,
    scale: jax.Array,
    args: tuple = (),
    pattern: Callable | None = None,
    pattern_key: Any = None,
):
    """``f`` at :math:`\\theta + t_k s_j v_j` for every direction ``j`` and step ``k``.

    Args:
        flat: the function (:func:`flatten_function`).
        directions: ``(n,)`` ints (the unit directions :math:`e_i`) or ``(n, P)`` vectors.
        ts: ``(K,)`` relative steps, real, or imaginary for the complex step.
        scale: ``(n,)`` per-direction scale :math:`s_j`.
        args: extra arguments of ``f`` (traced, not part of the cache key).
        pattern: optional ``(theta, *args) -> bool array``: whether a step changed it is
            reported; ``pattern_key`` (default ``pattern``) caches its program.

    Returns:
        ``(values (n, K, m), steps (n, K), crossed (n,))`` as NumPy arrays, ``steps`` the
        steps actually taken along each direction (exact for unit directions).
    """
    directions = np.asarray(directions)
    unit = np.issubdtype(directions.dtype, np.integer)
    ts = np.asarray(ts)
    theta = flat.theta.astype(np.result_type(flat.theta.dtype, ts.dtype))
    ts = ts.astype(np.result_type(flat.theta.dtype, ts.dtype))
    directions = directions.astype(np.int32 if unit else flat.theta.dtype)
    if pattern is not None and pattern_key is None:
        pattern_key = pattern
    program = _program(flat.key, flat.structure, bool(unit), pattern_key, flat.fn, pattern)
    scale = np.asarray(scale).astype(flat.theta.dtype)
    values, steps, crossed = program(theta, directions, ts, scale, args)
    return np.asarray(values), np.asarray(steps), np.asarray(crossed)


class Estimate(NamedTuple):
    """Directional derivatives :math:`(n, m)` with their own error bar, and kinks ``(n,)``."""

    value: np.ndarray
    error: np.ndarray
    crossed: np.ndarray
    evaluations: int | None


def _scale(theta, directions):
    """Per direction: :math:`\\max(1, \\max_i |\\theta_i|)` over the direction's support."""
    theta, directions = np.abs(theta), np.asarray(directions)
    if np.issubdtype(directions.dtype, np.integer):
        return np.maximum(1, theta[directions])
    return np.maximum(1, np.max(np.where(directions != 0, theta[None, :], 0), axis=1))


def complex_step_estimate(flat, directions, args=(), pattern=None, pattern_key=None) -> Estimate:
    r""":math:`\operatorname{Im} f(\theta + \mathrm{i} h v) / h`, :math:`h = u\, s`: error
    :math:`O(h^2)`, bar ``16 u |value|`` (no cancellation)."""
    u = float(jnp.finfo(flat.theta.dtype).eps)
    scale = _scale(flat.theta, directions)
    values, steps, crossed = evaluate_along(
        flat, directions, np.array([1j * u]), scale, args, pattern, pattern_key
    )
    d = np.imag(values[:, 0, :]).astype(np.float64) / np.imag(steps[:, :1]).astype(np.float64)
    return Estimate(d, 16 * u * np.abs(d), crossed, values.shape[0])


def central_estimate(
    flat, directions, args=(), pattern=None, pattern_key=None, eps=None
) -> Estimate:
    r"""Richardson-extrapolated central differences, :math:`R = (4 D(h) - D(2h)) / 3`, with
    the bar :math:`|D(h) - D(2h)| + 16\, u \max|f| / h` (truncation and rounding)."""
    dtype = flat.theta.dtype
    u = float(jnp.finfo(dtype).eps)
    eps = richardson_eps(dtype) if eps is None else eps
    scale = _scale(flat.theta, directions)
    ts = np.array([eps, -eps, 2 * eps, -2 * eps], dtype)
    values, steps, crossed = evaluate_along(flat, directions, ts, scale, args, pattern, pattern_key)
    f = values.real.astype(np.float64)  # (n, 4, m)
    s = steps.astype(np.float64)[:, :, None]  # (n, 4, 1)
    D1 = (f[:, 0] - f[:, 1]) / (s[:, 0] - s[:, 1])
    D2 = (f[:, 2] - f[:, 3]) / (s[:, 2] - s[:, 3])
    R = (4 * D1 - D2) / 3
    floor = 16 * u * np.max(np.abs(f), axis=1) / np.abs(s[:, 0] - s[:, 1])
    return Estimate(R, np.abs(D1 - D2) + floor, crossed, 4 * values.shape[0])


def check_dtype(params: Any, where: str) -> str:
    """The name of the params' dtype, float32 or float64, or a ``ValueError``."""
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError(f"{where}: params has no leaves: nothing to check")
    name = jnp.dtype(jnp.result_type(*leaves)).name
    if name not in TOLERANCES:
        raise ValueError(
            f"{where}: params of dtype {name}; expected float32 or float64 (for float64, "
            "enable x64 at the start of the process: jax.config.update('jax_enable_x64', True))"
        )
    return name


@functools.lru_cache(maxsize=128)
def _jit(fn):
    return jax.jit(fn)


def jitted(fn: Callable) -> Callable:
    """``jax.jit(fn)``, one wrapper per (equal) function, so later calls reuse its program."""
    try:
        return _jit(fn)
    except TypeError:  # unhashable: compile afresh
        return jax.jit(fn)


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


def best_reference(
    flat: FlatFunction,
    directions,
    bars: dict,
    args: tuple = (),
    pattern: Callable | None = None,
    pattern_key: Any = None,
    exact: Callable | None = None,
) -> Reference:
    """The derivatives of ``f`` along ``directions`` from the most exact reference.

    ``exact(directions) -> (n, m)`` (autodiff of a custom rule's primal) is taken when its
    values are finite. Otherwise the complex step, if ``f`` accepts complex input and the step
    agrees with Richardson central differences along the same directions (within the central
    error bar and ``bars["central"]``); otherwise the central differences, silently.
    """
    if exact is not None:
        value = np.asarray(exact(directions), np.float64)
        if np.all(np.isfinite(value)):
            return Reference("autodiff of the primal", value, np.zeros_like(value), None, None)
    if pattern is None and accepts_complex(flat, *args):
        cs = complex_step_estimate(flat, directions, args)
        check = _agrees_with_central(flat, directions, cs, args, bars)
        if check is not None:
            return Reference("complex_step", cs.value, cs.error, None, cs.evaluations + check)
    central = central_estimate(flat, directions, args, pattern, pattern_key)
    crossed = central.crossed if pattern is not None else None
    return Reference("central", central.value, central.error, crossed, central.evaluations)


def _agrees_with_central(flat, directions, cs: Estimate, args, bars) -> int | None:
    """Validate the complex step along one random combination ``w`` of the directions: ``w @
    cs`` against Richardson central differences along ``sum_j w_j d_j``. Returns the
    evaluations made if they agree, else None (not analytic: fall back)."""
    n, P = cs.value.shape[0], flat.theta.size
    w = np.random.default_rng(7).standard_normal(n)
    if np.issubdtype(np.asarray(directions).dtype, np.integer):
        d = np.zeros(P)
        np.add.at(d, np.asarray(directions), w)
    else:
        d = w @ np.asarray(directions, np.float64)
    c = np.abs(d).max()
    d, w = d / c, w / c  # the derivative along d is w @ cs
    central = central_estimate(flat, d[None, :].astype(flat.theta.dtype), args)
    predicted = w @ cs.value  # (m,)
    scale = max(np.abs(predicted).max(initial=0), np.abs(central.value).max(initial=0))
    bar = central.error[0] + bars["central"] * scale
    return central.evaluations if np.all(np.abs(predicted - central.value[0]) <= bar) else None
