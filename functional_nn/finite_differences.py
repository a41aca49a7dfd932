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

**Local.** The slides on the gradients of W(2) and W(1) suggest estimating each *local*
factor (``dJ/dy_hat``, ``dh(l)/dh(l-1)``, ``dh(l)/dw(l)``) by finite differences of that
local function alone, then chaining the factors backwards as back-propagation does:
:func:`local_finite_differences`. Each local function is one layer, so an evaluation costs a
layer, not a network: cheaper than global differences, dearer than back-propagation.

**Kinks.** A step that carries a ReLU pre-activation across 0 differences two linear pieces:
the quotient is not a derivative. The functions here can report, per direction, whether the
activation pattern at :math:`\theta \pm h_i e_i` differs from the one at :math:`\theta`
(``pattern``); :mod:`functional_nn.gradcheck` reports those entries as ``kink``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from functional_nn.backprop import objective, prepare, reduction_scale, summed_loss, use_fused
from functional_nn.losses import Loss
from functional_nn.network import Layer, Network, Params
from functional_nn.parallel import auto_mesh

__all__ = [
    "SCHEMES",
    "FiniteDifferenceResult",
    "default_eps",
    "evaluations",
    "finite_differences",
    "finite_difference_grad",
    "finite_difference_jacobian",
    "local_finite_differences",
    "local_evaluations",
    "relu_pattern",
]

SCHEMES = ("forward", "central", "complex_step")
DEFAULT_CHUNK_SIZE = (
    32  # directions per vmapped chunk: the fastest at P = 1e3 and 1e4 (benchmark.py)
)


class FiniteDifferenceResult(NamedTuple):
    """What a finite-difference estimate returns when asked for its cost and kinks.

    Attributes:
        value: the gradient (a pytree like ``params``) or the Jacobian.
        evaluations: how many times the function was evaluated.
        kinks: a boolean pytree/array like ``value``: entries whose step changed the
            activation pattern (all ``False`` without a ``pattern``).
    """

    value: Any
    evaluations: int
    kinks: Any


def _check_dtype(dtype, where: str):
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"{where}: parameters must be floating point; got {dtype}")
    if jnp.finfo(dtype).bits < 32:
        raise ValueError(
            f"{where}: {dtype} has {jnp.finfo(dtype).nmant + 1} significant bits; a "
            "finite-difference step is meaningless there (cast to float32 or float64)"
        )
    return dtype


def default_eps(scheme: str, dtype) -> float:
    r"""The default relative step: :math:`\sqrt u` (forward), :math:`u^{1/3}` (central),
    :math:`u` (complex step), for the machine epsilon :math:`u` of ``dtype``.

    >>> f"{default_eps('forward', 'float64'):.1e}", f"{default_eps('central', 'float32'):.1e}"
    ('1.5e-08', '4.9e-03')
    """
    _check_scheme(scheme, "default_eps")
    u = float(jnp.finfo(_check_dtype(dtype, "default_eps")).eps)
    return {"forward": math.sqrt(u), "central": u ** (1 / 3), "complex_step": u}[scheme]


def evaluations(scheme: str, P: int) -> int:
    """Evaluations of ``f`` a global estimate makes: ``P + 1``, ``2P`` or ``P``."""
    _check_scheme(scheme, "evaluations")
    return {"forward": P + 1, "central": 2 * P, "complex_step": P}[scheme]


def _check_scheme(scheme, where):
    if scheme not in SCHEMES:
        raise ValueError(f"{where}: unknown scheme {scheme!r}; expected one of {SCHEMES}")


def _check_args(scheme, eps, chunk_size, where):
    _check_scheme(scheme, where)
    if isinstance(eps, jax.core.Tracer):
        pass  # a traced eps (an eps study vmapped over a grid) is the caller's to check
    elif eps is not None and not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{where}: eps must be a positive finite number; got {eps!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"{where}: chunk_size must be an int >= 1; got {chunk_size!r}")


def _steps(theta: jax.Array, scheme: str, eps: float) -> jax.Array:
    """:math:`h_i = \\epsilon \\max(1, |\\theta_i|)`, rounded so that ``theta +- h`` is exact."""
    h = eps * jnp.maximum(1, jnp.abs(theta))
    if scheme == "complex_step":
        return h  # the imaginary part carries h exactly
    return (theta + h) - theta


def _directional_columns(g, theta, scheme, h, chunk_size, pattern, mesh=None):
    """Columns ``d g / d theta_i`` for every ``i``, and whether each step crossed a kink.

    ``g: (P,) -> (m,)``. Returns ``(columns (P, m), kinks (P, k))`` where ``k`` is the size
    of ``pattern``'s output (1, always False, without one).
    """
    P = theta.shape[0]
    base_pattern = pattern(theta) if pattern is not None else jnp.zeros((1,), bool)

    def one(i):
        e_h = jnp.zeros_like(theta).at[i].set(h[i])  # h_i e_i
        crossed = jnp.zeros(base_pattern.shape, bool)
        if scheme == "complex_step":
            column = jnp.imag(g(theta + 1j * e_h)) / h[i]
        elif scheme == "central":
            plus, minus = theta + e_h, theta - e_h
            column = (g(plus) - g(minus)) / (2 * h[i])
            if pattern is not None:
                crossed = (pattern(plus) != base_pattern) | (pattern(minus) != base_pattern)
        else:  # forward: g(theta) is computed once, outside
            plus = theta + e_h
            column = g(plus) / h[i]
            if pattern is not None:
                crossed = pattern(plus) != base_pattern
        return column, crossed

    chunk = min(chunk_size, P)
    if mesh is None:
        columns, crossed = jax.lax.map(one, jnp.arange(P), batch_size=chunk)
    else:
        columns, crossed = _sharded_map(one, P, chunk, auto_mesh(mesh))
    if scheme == "forward":
        columns = columns - g(theta)[None, :] / h[:, None]
    return columns, crossed


def _sharded_map(one, P: int, chunk: int, mesh):
    """``lax.map(one, arange(P), batch_size=chunk)`` with its whole chunks split over the
    devices of ``mesh``: each device scans its chunks exactly as the unsharded map scans
    them, so every column is computed by the same arithmetic and the result is identical.
    The chunks are padded to a multiple of the device count with copies of chunk 0, whose
    results are discarded; the ``P mod chunk`` remaining directions run as the map runs them.
    """
    n = mesh.size
    n_full = P // chunk
    if n_full == 0:  # fewer directions than one chunk: nothing to split
        return jax.vmap(one)(jnp.arange(P))
    per_device = -(-n_full // n)
    blocks = jnp.arange(n * per_device * chunk).reshape(n * per_device, chunk) % (n_full * chunk)
    spec = PartitionSpec(mesh.axis_names)

    def local(b):  # (per_device, chunk) directions on this device
        return jax.lax.map(jax.vmap(one), b)

    out = jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec)(blocks)
    columns, crossed = (a.reshape(n * per_device * chunk, -1)[: n_full * chunk] for a in out)
    if P % chunk:
        rest = jax.vmap(one)(jnp.arange(n_full * chunk, P))
        columns = jnp.concatenate([columns, rest[0]])
        crossed = jnp.concatenate([crossed, rest[1]])
    return columns, crossed


def _as_vector_fn(f, unravel, where, scalar: bool):
    """``f`` of a pytree as a function of the flat vector, output flattened to ``(m,)``."""

    def g(theta):
        out = f(unravel(theta))
        if scalar and jnp.shape(out) != ():
            raise ValueError(
                f"{where}: f must return a scalar; got shape {jnp.shape(out)} "
                "(use finite_difference_jacobian for vector functions)"
            )
        return jnp.reshape(out, (-1,))

    return g


def _complex_check(g, theta, where):
    out = jax.eval_shape(g, jax.ShapeDtypeStruct(theta.shape, jnp.result_type(theta, 1j)))
    if not jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise ValueError(
            f"{where}: scheme 'complex_step' needs f to stay complex-analytic, but f returned "
            f"{out.dtype} for complex parameters (it takes a real part, abs or a comparison "
            "that drops the imaginary part); use scheme='central'"
        )


def _ravel(tree):
    """Flatten a pytree to one vector; ``unravel`` keeps the dtype of the vector it is given
    (unlike :func:`jax.flatten_util.ravel_pytree`'s, which casts back), so that a complex
    step reaches ``f`` complex."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    for leaf in leaves:
        _check_dtype(jnp.result_type(leaf), "finite differences")
    shapes = [jnp.shape(leaf) for leaf in leaves]
    sizes = [math.prod(s) for s in shapes]
    dtype = jnp.result_type(*leaves) if leaves else jnp.float32
    theta = (
        jnp.concatenate([jnp.ravel(leaf).astype(dtype) for leaf in leaves])
        if leaves
        else jnp.zeros((0,), dtype)
    )
    offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]

    def unravel(t):
        parts = [t[offsets[i] : offsets[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
        return jax.tree_util.tree_unflatten(treedef, parts)

    return theta, unravel


def _fd(f, x, scheme, eps, chunk_size, pattern, where, scalar, mesh=None):
    _check_args(scheme, eps, chunk_size, where)
    theta, unravel = _ravel(x)
    dtype = _check_dtype(theta.dtype, where)
    if theta.size == 0:
        raise ValueError(f"{where}: nothing to differentiate (no parameters)")
    eps = default_eps(scheme, dtype) if eps is None else eps
    g = _as_vector_fn(f, unravel, where, scalar)
    if scheme == "complex_step":
        _complex_check(g, theta, where)
    pattern_flat = None
    if pattern is not None:

        def pattern_flat(t):
            return jnp.reshape(pattern(unravel(t)), (-1,))

    h = _steps(theta, scheme, eps)
    columns, crossed = _directional_columns(
        g, theta, scheme, h, chunk_size or DEFAULT_CHUNK_SIZE, pattern_flat, mesh
    )
    return theta, unravel, columns, crossed, evaluations(scheme, theta.size)


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
):
    r"""The gradient of a scalar function of any pytree, by global finite differences.

    Args:
        f: ``params -> scalar``; for ``"complex_step"`` it must accept complex parameters
            and stay complex-analytic (a clear error says when it does not).
        params: any pytree of floating arrays (float32 or float64).
        scheme: ``"forward"`` (P+1 evaluations, the lecture's formula), ``"central"`` (2P)
            or ``"complex_step"`` (P).
        eps: relative step; :math:`h_i = \epsilon \max(1, |\theta_i|)`. Default: see
            :func:`default_eps`.
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

    Returns:
        the gradient, a pytree like ``params``; or a :class:`FiniteDifferenceResult`.

    >>> import jax.numpy as jnp
    >>> f = lambda p: jnp.sum(p["w"] ** 3)
    >>> r = finite_difference_grad(f, {"w": jnp.array([1.0, 2.0])}, return_info=True)
    >>> [round(float(v), 3) for v in r.value["w"]], r.evaluations
    ([3.0, 12.0], 4)
    """
    where = "finite_difference_grad"
    theta, unravel, columns, crossed, n = _fd(
        f, params, scheme, eps, chunk_size, pattern, where, scalar=True, mesh=mesh
    )
    grad = unravel(columns[:, 0].astype(theta.dtype))
    if not return_info:
        return grad
    kinks = jax.tree_util.tree_map(lambda a: a != 0, unravel(jnp.any(crossed, axis=1)))
    return FiniteDifferenceResult(grad, n, kinks)


def finite_difference_jacobian(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    scheme: str = "central",
    eps: float | None = None,
    *,
    chunk_size: int | None = None,
    pattern: Callable[[jax.Array], jax.Array] | None = None,
    return_info: bool = False,
):
    r"""The Jacobian of a vector function by finite differences: ``(m, n)`` for ``f: R^n -> R^m``.

    Shaped like :func:`jax.jacobian`: ``f(x).shape + x.shape``. The building block of
    :func:`local_finite_differences`.

    Args:
        f: ``x -> array``.
        x: a floating array.
        scheme, eps, chunk_size, return_info: as :func:`finite_difference_grad`.
        pattern: optional ``x -> bool array`` shaped like ``f(x)``; entry ``[j, i]`` of
            ``kinks`` says whether stepping ``x_i`` changed ``pattern_j``.

    >>> import jax.numpy as jnp
    >>> J = finite_difference_jacobian(lambda v: jnp.array([v[0] * v[1], v[1]]), jnp.ones(2))
    >>> J.round(6).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
    """
    x = jnp.asarray(x)
    out_shape = jax.eval_shape(f, x).shape
    theta, _, columns, crossed, n = _fd(
        f, x, scheme, eps, chunk_size, pattern, "finite_difference_jacobian", scalar=False
    )
    jac = columns.T.reshape(out_shape + x.shape).astype(theta.dtype)
    if not return_info:
        return jac
    if pattern is None:
        kinks = jnp.zeros(jac.shape, bool)
    else:
        kinks = crossed.T.reshape(out_shape + x.shape)
    return FiniteDifferenceResult(jac, n, kinks)


# -- the lecture's local differences ------------------------------------------------------------


def local_evaluations(net: Network, scheme: str = "central") -> int:
    """Local-function evaluations :func:`local_finite_differences` makes (batch vectorized).

    The sum of the local input sizes, ``O + sum_l (H_l H_{l-1} [+ H_l]) + sum_{l>=2} H_{l-1}``,
    times 2 for central differences; forward adds one base evaluation per local function.
    """
    _check_scheme(scheme, "local_evaluations")
    sizes = [net.O]
    for l in range(1, net.L + 2):
        out, inp = net.sizes[l], net.sizes[l - 1]
        sizes.append(out * inp)
        if net.bias:
            sizes.append(out)
        if l > 1:
            sizes.append(inp)
    return sum(evaluations(scheme, s) for s in sizes)


def _local_jacobian(f, v, kinked: bool, scheme, eps):
    """Finite-difference Jacobian of one local function ``f(v, pre)`` (``pre=True``: the
    pre-activation, whose sign pattern marks the kinks of a ReLU layer)."""
    pattern = (lambda u: jnp.real(f(u, True)) > 0) if kinked else None
    r = finite_difference_jacobian(
        lambda u: f(u, False), v, scheme, eps, pattern=pattern, return_info=True
    )
    return r.value, r.kinks


def _reaches(kinked_rows: jax.Array, factor: jax.Array) -> jax.Array:
    """Entries of ``rows @ factor`` that a kinked entry of ``rows`` (1, m) reaches."""
    return (kinked_rows.astype(factor.dtype) @ (factor != 0).astype(factor.dtype)) > 0


def _local_layer(W, b, h_prev, fn, kinked, g, g_kink, first, scheme, eps):
    """One layer of the local chain: its factors by finite differences, then
    ``dJ/dw = g . dh/dw`` and ``g(l-1) = g . dh/dh(l-1)``; kink masks travel the same way."""

    def layer(W_, h_, b_, pre):
        z = W_ @ h_ + (b_ if b_ is not None else 0)
        return z if pre else fn(z)

    dh_dw, k_w = _local_jacobian(
        lambda w, pre: layer(w.reshape(W.shape), h_prev, b, pre), W.ravel(), kinked, scheme, eps
    )
    gW = (g @ dh_dw).reshape(W.shape)  # (H_l, H_{l-1})
    kW = (_reaches(g_kink, dh_dw) | jnp.any(k_w, axis=0)[None, :]).reshape(W.shape)
    gb = kb = None
    if b is not None:
        dh_db, k_b = _local_jacobian(
            lambda b_, pre: layer(W, h_prev, b_, pre), b, kinked, scheme, eps
        )
        gb = (g @ dh_db)[0]  # (H_l,)
        kb = _reaches(g_kink, dh_db)[0] | jnp.any(k_b, axis=0)
    if not first:
        dh_dh, k_h = _local_jacobian(
            lambda u, pre: layer(W, u, b, pre), h_prev, kinked, scheme, eps
        )
        g_kink = _reaches(g_kink, dh_dh) | jnp.any(k_h, axis=0)[None, :]
        g = g @ dh_dh  # (1, H_{l-1}): g(l-1)
    return Layer(gW, gb), Layer(kW, kb), g, g_kink


def _local_sample(net, loss, params, x, y, fused, scheme, eps):
    """Local factors of one sample, each by finite differences of its own local function,
    chained backwards as jacobian_chain chains the exact ones; kink masks alongside."""
    trace = net.trace(params, x)
    L1 = net.L + 1
    if fused:  # the output activation is in the seed: dJ/dz(L+1), and layer L+1 gives z(L+1)
        seed, seed_kink = _local_jacobian(
            lambda z, pre: loss.logits_value(z, y), trace.z[L1], False, scheme, eps
        )
    else:
        seed, seed_kink = _local_jacobian(
            lambda a, pre: loss.value(a, y), trace.h[L1], False, scheme, eps
        )
    g, g_kink = seed[None, :], seed_kink[None, :]  # (1, O)
    grads, kinks = [None] * L1, [None] * L1
    for l in range(L1, 0, -1):
        W, b = params[l - 1]
        act = net.activation(l)
        fn = (lambda z: z) if (l == L1 and fused) else act.fn
        kinked = act.name == "relu" and not (l == L1 and fused)
        grads[l - 1], kinks[l - 1], g, g_kink = _local_layer(
            W, b, trace.h[l - 1], fn, kinked, g, g_kink, l == 1, scheme, eps
        )
    return tuple(grads), tuple(kinks)


def local_finite_differences(
    net: Network,
    loss: str | Loss,
    params: Params,
    x,
    y,
    reduction: str = "sum",
    scheme: str = "central",
    eps: float | None = None,
    *,
    return_info: bool = False,
):
    r"""The lecture's suggestion: every local factor by finite differences, then the chain.

    For each sample, :math:`\partial J/\partial \hat y` (or :math:`\partial J/\partial z^{(L+1)}`
    when the loss is fused with the output), and for each layer
    :math:`\partial h^{(l)}/\partial w^{(l)}`, :math:`\partial h^{(l)}/\partial b^{(l)}` and
    :math:`\partial h^{(l)}/\partial h^{(l-1)}`, are estimated by
    :func:`finite_difference_jacobian` of that local function alone (one layer, at the
    intermediates of the forward pass), then multiplied backwards exactly as
    :func:`~functional_nn.jacobian_chain` multiplies the exact factors.

    Args:
        net, loss, params, x, y, reduction: as every gradient method.
        scheme, eps: as :func:`finite_difference_grad`.
        return_info: also return the evaluation count and kink masks (a
            :class:`FiniteDifferenceResult` with ``value = (J, grads)``).

    Returns:
        ``(J, grads)``; or a :class:`FiniteDifferenceResult`.
    """
    loss_, xb, yb = prepare(net, loss, params, x, y, reduction, "local_finite_differences")
    _check_args(scheme, eps, None, "local_finite_differences")
    fused = use_fused(net, loss_, None)
    per_sample, kinks = jax.vmap(
        lambda xn, yn: _local_sample(net, loss_, params, xn, yn, fused, scheme, eps)
    )(xb, yb)
    s = reduction_scale(reduction, xb)
    grads = jax.tree_util.tree_map(lambda g: s * jnp.sum(g, axis=0), per_sample)
    J = s * summed_loss(net, loss_, net.trace(params, xb), yb, fused)
    if not return_info:
        return J, grads
    kinks = jax.tree_util.tree_map(lambda k: jnp.any(k, axis=0), kinks)
    return FiniteDifferenceResult((J, grads), local_evaluations(net, scheme), kinks)


# -- finite differences as gradient methods of networks -----------------------------------------


def relu_pattern(net: Network, params: Params, x) -> jax.Array:
    """The activation pattern of every ReLU layer, ``z(l) > 0`` for all samples, flattened.

    A step that changes it has crossed a kink. Empty-free: a network without ReLU gives one
    constant ``False``.
    """
    trace = net.trace(params, x)
    parts = [
        jnp.ravel(jnp.real(trace.z[l]) > 0)
        for l in range(1, net.L + 2)
        if net.activation(l).name == "relu"
    ]
    return jnp.concatenate(parts) if parts else jnp.zeros((1,), bool)


def finite_differences(
    net: Network,
    loss: str | Loss,
    params: Params,
    x,
    y,
    reduction: str = "sum",
    scheme: str = "central",
    eps: float | None = None,
    *,
    chunk_size: int | None = None,
    return_info: bool = False,
    mesh: Mesh | None = None,
):
    """Global finite differences of :func:`~functional_nn.objective` as a gradient method.

    The common signature ``(net, loss, params, x, y) -> (J, grads)``; with
    ``return_info=True`` a :class:`FiniteDifferenceResult` whose ``value`` is ``(J, grads)``,
    with the evaluation count and the entries whose step crossed a ReLU kink.

    Args:
        scheme, eps, chunk_size, mesh: as :func:`finite_difference_grad` (default: central).
    """
    prepare(net, loss, params, x, y, reduction, "finite_differences")
    J = objective(net, loss, reduction)
    r = finite_difference_grad(
        lambda p: J(p, x, y),
        params,
        scheme,
        eps,
        chunk_size=chunk_size,
        pattern=lambda p: relu_pattern(net, p, x),
        return_info=True,
        mesh=mesh,
    )
    value = (J(params, x, y), r.value)
    return r._replace(value=value) if return_info else value
