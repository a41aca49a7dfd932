r"""Finite differences: global (the lecture's formula) and local (the lecture's suggestion).

**Global.** The slide "Computing the gradients" estimates each partial derivative by
perturbing one parameter and measuring the loss:

.. math::

    \text{forward: } \frac{J(\theta + h_i e_i) - J(\theta)}{h_i}, \qquad
    \text{central: } \frac{J(\theta + h_i e_i) - J(\theta - h_i e_i)}{2 h_i}, \qquad
    \text{complex step: } \frac{\operatorname{Im} J(\theta + \mathrm{i}\, h_i e_i)}{h_i}

costing ``P + 1``, ``2P`` and ``P`` evaluations of ``J``. The step is
:math:`h_i = \epsilon \max(1, |\theta_i|)`, rounded so that :math:`\theta_i \pm h_i` is exact,
with the default :math:`\epsilon` chosen from the scheme and the dtype's machine epsilon
:math:`u` (float64: :math:`u = 2.2 \cdot 10^{-16}`; float32: :math:`1.2 \cdot 10^{-7}`):

- forward, error :math:`O(h) + O(u/h)`: :math:`\epsilon = \sqrt{u}` (1.5e-8 in float64);
- central, error :math:`O(h^2) + O(u/h)`: :math:`\epsilon = u^{1/3}` (6.1e-6 in float64);
- complex step, error :math:`O(h^2)` with no cancellation: :math:`\epsilon = u`.

The perturbation directions are evaluated with :func:`jax.vmap`, ``chunk_size`` at a time,
inside one compiled :func:`jax.lax.map`: memory stays at ``chunk_size`` evaluations however
large ``P`` is, and no Python loop runs over the parameters.

When ``P`` is at most one chunk the directions are one plain :func:`jax.vmap` (a smaller
program, faster to compile).

**The complex step is validated.** It reads a derivative only where ``f`` is
complex-analytic. A function that errors on complex input or returns a real output is refused
before anything runs; one that returns complex but is not analytic (``conj``, ``real``, or a
JAX kernel that drops the imaginary part, as ``jnp.logaddexp`` does) is caught by a
cross-check: the complex-step gradient along a random direction and at its largest entry
against central differences. On disagreement a concrete call raises ``ValueError``; a traced
one (under ``jit``) returns ``nan`` everywhere, never a wrong gradient.

**Kinks.** A step that carries a ReLU pre-activation across 0 differences two linear pieces:
the quotient is not a derivative. The functions here can report, per direction, whether the
activation pattern at :math:`\theta \pm h_i e_i` differs from the one at :math:`\theta`
(``pattern``); :mod:`functional_nn.checking` reports those entries as ``kink``.

**Precision.** Every program here runs with the highest matmul precision, whatever the process
default (:func:`~functional_nn._util._precision.highest_precision`): a float32 difference quotient
assumes true float32 products, which TF32 or bfloat16 matmuls on accelerators are not. The
local differences and the network methods are in :mod:`functional_nn.differences._network_methods`;
the flattening of parameters (:func:`ravel_params`) in :mod:`functional_nn.differences._flat`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from functional_nn._compile import as_loop
from functional_nn._util._devices import auto_mesh
from functional_nn._util._precision import highest_precision
from functional_nn._util._validation import check_finite_leaves, is_concrete
from functional_nn.differences._complex import CROSS_CHECKS, complex_checked, complex_step_agrees
from functional_nn.differences._flat import check_float_dtype, ravel_params
from functional_nn.differences._steps import (
    DEFAULT_CHUNK_SIZE,
    check_eps_for_dtype,
    check_step_args,
    default_eps,
    evaluations,
    step_sizes,
)


class FiniteDifferenceResult(NamedTuple):
    """What a finite-difference estimate returns when asked for its cost and kinks.

    Attributes:
        value: the gradient (a pytree like ``params``) or the Jacobian.
        evaluations: the points at which the compiled program evaluates the function
            (padding excluded): ``P + 1``, ``2P``, ``P + 4`` (the complex step and its
            cross-check). Each is one run of ``f``'s computation; XLA may still skip the
            parts of it whose results are unused (the real part at a complex step), so a
            ``jax.pure_callback`` inside ``f`` may run fewer times than this (from jax
            0.12.1 it does), while an ``io_callback``, a side effect, runs once per
            evaluation.
        kinks: a boolean pytree/array like ``value``: entries whose step changed the
            activation pattern (all ``False`` without a ``pattern``).
    """

    value: Any
    evaluations: int
    kinks: Any


def _directional_columns(g, theta, scheme, h, chunk_size, pattern, mesh=None):
    """Columns ``d g / d theta_i`` for every ``i``, and whether each step crossed a kink.

    ``g: (P,) -> (m,)``. Returns ``(columns (P, m), kinks (P, k))`` where ``k`` is the size
    of ``pattern``'s output (1, always False, without one).
    """
    P = theta.shape[0]
    base_pattern = pattern(theta) if pattern is not None else jnp.zeros((1,), bool)

    positions = jnp.arange(P)

    def no_kink():
        return jnp.zeros(base_pattern.shape, bool)

    def side(i, h_i):  # g at theta + h_i e_i (h_i of either sign); the pattern's change, if any
        step = theta + jnp.where(positions == i, h_i, 0)  # a compare: no scatter to batch
        return g(step), (pattern(step) != base_pattern if pattern is not None else None)

    def one(i, h_i):  # the column of direction i, and whether its steps crossed a kink
        if scheme == "complex_step":
            return jnp.imag(g(theta + 1j * jnp.where(positions == i, h_i, 0))) / h_i, no_kink()
        plus, crossed = side(i, h_i)
        if scheme == "forward":  # g(theta) is computed once, outside
            return plus / h_i, no_kink() if crossed is None else crossed
        minus, crossed_minus = side(i, -h_i)
        column = (plus - minus) / (2 * h_i)
        return column, no_kink() if crossed is None else crossed | crossed_minus

    chunk = min(chunk_size, P)
    if mesh is None and P <= chunk and scheme == "central":  # both sides in one batch
        values, crossed = jax.vmap(side)(jnp.tile(positions, 2), jnp.concatenate([h, -h]))
        columns = (values[:P] - values[P:]) / (2 * h[:, None])
        crossed = jnp.zeros((P, 1), bool) if crossed is None else crossed[:P] | crossed[P:]
    elif mesh is None and P <= chunk:  # one chunk: a plain vmap, the smallest program
        columns, crossed = jax.vmap(one)(positions, h)
    elif mesh is None:
        columns, crossed = as_loop(
            jax.lax.map, lambda ih: one(*ih), (positions, h), batch_size=chunk
        )
    else:
        columns, crossed = _sharded_map(one, h, chunk, auto_mesh(mesh))
    if scheme == "forward":
        columns = columns - g(theta)[None, :] / h[:, None]
    return columns, crossed


def _sharded_map(one, h, chunk: int, mesh):
    """``lax.map(one, (arange(P), h), batch_size=chunk)`` with its whole chunks split over the
    devices of ``mesh``: each device scans its chunks exactly as the unsharded map scans
    them, so every column is computed by the same arithmetic and the result is identical.
    The chunks are padded to a multiple of the device count with copies of chunk 0, whose
    results are discarded; the ``P mod chunk`` remaining directions run as the map runs them.
    """
    n, P = mesh.size, h.shape[0]
    n_full = P // chunk
    if n_full == 0:  # fewer directions than one chunk: nothing to split
        return jax.vmap(one)(jnp.arange(P), h)
    per_device = -(-n_full // n)
    blocks = jnp.arange(n * per_device * chunk).reshape(n * per_device, chunk) % (n_full * chunk)
    spec = PartitionSpec(mesh.axis_names)

    def local(b, hb):  # (per_device, chunk) directions on this device
        return as_loop(jax.lax.map, lambda a: jax.vmap(one)(*a), (b, hb))

    out = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec)(blocks, h[blocks])
    columns, crossed = (a.reshape(n * per_device * chunk, -1)[: n_full * chunk] for a in out)
    if P % chunk:
        rest = jax.vmap(one)(jnp.arange(n_full * chunk, P), h[n_full * chunk :])
        columns = jnp.concatenate([columns, rest[0]])
        crossed = jnp.concatenate([crossed, rest[1]])
    return columns, crossed


def _as_vector_fn(f, unravel, where, scalar: bool, shapes: list):
    """``f`` of a pytree as a function of the flat vector, output flattened to ``(m,)``; the
    shape of ``f``'s output is appended to ``shapes`` whenever it is traced."""

    def g(theta):
        out = f(unravel(theta))
        if scalar and jnp.shape(out) != ():
            raise ValueError(
                f"{where}: f must return a scalar; got shape {jnp.shape(out)} "
                "(use finite_difference_jacobian for vector functions)"
            )
        shapes.append(jnp.shape(out))
        return jnp.reshape(out, (-1,))

    return g


def _fd(f, x, scheme, eps, chunk_size, pattern, where, scalar, mesh=None, cross_check=True):
    eps, chunk_size = check_step_args(scheme, eps, chunk_size, where)
    theta, unravel = ravel_params(x)
    dtype = check_float_dtype(theta.dtype, where)
    if theta.size == 0:
        raise ValueError(f"{where}: nothing to differentiate (no parameters)")
    check_eps_for_dtype(scheme, eps, dtype, where)
    check_finite_leaves(x, "params" if scalar else "x", where)
    eps = default_eps(scheme, dtype) if eps is None else eps
    shapes = []
    g = _as_vector_fn(f, unravel, where, scalar, shapes)
    if scheme == "complex_step":  # checked where the columns evaluate it: no trace of its own
        g = complex_checked(g, where)
    pattern_flat = None
    if pattern is not None:

        def pattern_flat(t):
            return jnp.reshape(pattern(unravel(t)), (-1,))

    h = step_sizes(theta, scheme, eps)
    columns, crossed = _directional_columns(
        g, theta, scheme, h, chunk_size or DEFAULT_CHUNK_SIZE, pattern_flat, mesh
    )
    n_eval = evaluations(scheme, theta.size)
    if scheme == "complex_step" and not cross_check:
        n_eval -= CROSS_CHECKS
    elif scheme == "complex_step":
        agrees = complex_step_agrees(g, theta, columns, pattern_flat)
        if is_concrete(agrees) and not bool(agrees):
            raise ValueError(
                f"{where}: the complex step disagrees with central differences, so f is not "
                "complex-analytic (it uses conj, real or abs, or a JAX kernel that drops the "
                "imaginary part, such as jnp.logaddexp); use scheme='central'"
            )
        columns = jnp.where(agrees, columns, jnp.nan)  # traced: nan, never a wrong gradient
    return theta, unravel, columns, crossed, n_eval, shapes[0]


@highest_precision
def finite_difference_grad(
    f: Callable[[Any], jax.Array],
    params: Any,
    scheme: str = "central",
    eps: float | None = None,
    *,
    chunk_size: int | None = None,
    pattern: Callable[[Any], jax.Array] | None = None,
    return_info: bool = False,
    mesh: Mesh | None = None,
    cross_check: bool = True,
):
    r"""The gradient of a scalar function of any pytree, by global finite differences.

    Args:
        f: ``params -> scalar``; for ``"complex_step"`` it must accept complex parameters
            and stay complex-analytic (checked: see the module's docstring).
        params: any pytree of floating arrays (float32 or float64).
        scheme: ``"forward"`` (P+1 evaluations, the lecture's formula), ``"central"`` (2P)
            or ``"complex_step"`` (P).
        eps: relative step in (0, 1); :math:`h_i = \epsilon \max(1, |\theta_i|)`. Default:
            see :func:`default_eps`.
        chunk_size: directions evaluated together by :func:`jax.vmap` (default 32).
        pattern: optional ``params -> bool array``, the activation pattern; an entry whose
            step changes it is marked in ``kinks``.
        return_info: return a :class:`FiniteDifferenceResult` (gradient, evaluations, kinks)
            instead of the gradient alone.
        mesh: a ``jax.sharding.Mesh``: the chunks of directions are split over its devices
            (``jax.shard_map``), each device scanning its chunks exactly as the unsharded
            estimate does, so the gradient is identical and the estimate runs n times wider.
            The chunks are padded to a multiple of the device count with copies of chunk 0,
            whose results are discarded (``evaluations`` counts the useful ones).
        cross_check: validate the complex step against central differences (4 evaluations;
            see the module's docstring). Turn it off only for a function known to be
            complex-analytic (the library's own layers).

    Returns:
        the gradient, a pytree like ``params``; or a :class:`FiniteDifferenceResult`.

    >>> import jax.numpy as jnp
    >>> f = lambda p: jnp.sum(p["w"] ** 3)
    >>> r = finite_difference_grad(f, {"w": jnp.array([1.0, 2.0])}, return_info=True)
    >>> [round(float(v), 3) for v in r.value["w"]], r.evaluations
    ([3.0, 12.0], 4)
    """
    return fd_grad(
        f, params, scheme, eps, chunk_size, pattern, return_info, mesh, cross_check,
        "finite_difference_grad",
    )  # fmt: skip


def fd_grad(f, params, scheme, eps, chunk_size, pattern, return_info, mesh, cross_check, where):
    """:func:`finite_difference_grad` with its errors labelled ``where`` (the public method
    that called it: ``finite_differences``, ``complex_step``)."""
    theta, unravel, columns, crossed, n, _ = _fd(
        f, params, scheme, eps, chunk_size, pattern, where, True, mesh, cross_check
    )
    grad = unravel(columns[:, 0].astype(theta.dtype))
    if not return_info:
        return grad
    kinks = jax.tree_util.tree_map(lambda a: a != 0, unravel(jnp.any(crossed, axis=1)))
    return FiniteDifferenceResult(grad, n, kinks)


@highest_precision
def finite_difference_jacobian(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    scheme: str = "central",
    eps: float | None = None,
    *,
    chunk_size: int | None = None,
    pattern: Callable[[jax.Array], jax.Array] | None = None,
    return_info: bool = False,
    cross_check: bool = True,
):
    r"""The Jacobian of a vector function by finite differences: ``(m, n)`` for ``f: R^n -> R^m``.

    Shaped like :func:`jax.jacobian`: ``f(x).shape + x.shape``. The building block of
    :func:`local_finite_differences`.

    Args:
        f: ``x -> array``.
        x: a floating array.
        scheme, eps, chunk_size, return_info, cross_check: as :func:`finite_difference_grad`.
        pattern: optional ``x -> bool array`` shaped like ``f(x)``; entry ``[j, i]`` of
            ``kinks`` says whether stepping ``x_i`` changed ``pattern_j``.

    >>> import jax.numpy as jnp
    >>> J = finite_difference_jacobian(lambda v: jnp.array([v[0] * v[1], v[1]]), jnp.ones(2))
    >>> J.round(6).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
    """
    x = jnp.asarray(x)
    theta, _, columns, crossed, n, out_shape = _fd(
        f,
        x,
        scheme,
        eps,
        chunk_size,
        pattern,
        "finite_difference_jacobian",
        False,
        None,
        cross_check,
    )
    jac = columns.T.reshape(out_shape + x.shape).astype(theta.dtype)
    if not return_info:
        return jac
    if pattern is None:
        kinks = jnp.zeros(jac.shape, bool)
    else:
        kinks = crossed.T.reshape(out_shape + x.shape)
    return FiniteDifferenceResult(jac, n, kinks)
