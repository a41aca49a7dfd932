r"""Finite differences as gradient methods of a network: global and local.

**Global.** :func:`finite_differences` is :func:`~functional_nn.finite_difference_grad` of the
objective ``J(params, x, y)`` with the common signature ``(net, loss, params, x, y) -> (J,
grads)``; :func:`complex_step` the same with the complex step. A step that carries a ReLU
pre-activation across 0 is detected by :func:`relu_pattern` and reported as a kink.

**Local.** The slides on the gradients of W(2) and W(1) suggest estimating each *local*
factor (``dJ/dy_hat``, ``dh(l)/dh(l-1)``, ``dh(l)/dw(l)``) by finite differences of that
local function alone, then chaining the factors backwards as back-propagation does:
:func:`local_finite_differences`. Each local function is one layer, so an evaluation costs a
layer, not a network: cheaper than global differences, dearer than back-propagation.

Every method here runs its programs with the highest matmul precision
(:func:`~functional_nn._util._precision.highest_precision`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from functional_nn._util._precision import highest_precision
from functional_nn._util._validation import check_finite_leaves
from functional_nn.differences._engine import (
    FiniteDifferenceResult,
    fd_grad,
    finite_difference_jacobian,
)
from functional_nn.differences._steps import (
    check_eps_for_dtype,
    check_step_args,
)
from functional_nn.lecture._cost import (
    objective,
    prepare,
    reduction_scale,
    summed_loss,
    use_fused,
)
from functional_nn.lecture._losses import Loss
from functional_nn.lecture._network import Layer, Network, Params

# -- the lecture's local differences ------------------------------------------------------------


def local_evaluations(net: Network, scheme: str = "central") -> int:
    """Local-function evaluations :func:`local_finite_differences` makes (batch vectorized).

    The sum of the local input sizes, ``O + sum_l (H_l H_{l-1} [+ H_l]) + sum_{l>=2} H_{l-1}``,
    times 2 for central differences; forward adds one base evaluation per local function.
    """
    check_step_args(scheme, None, None, "local_evaluations")
    sizes = [net.O]
    for l in range(1, net.L + 2):
        out, inp = net.sizes[l], net.sizes[l - 1]
        sizes.append(out * inp)
        if net.bias:
            sizes.append(out)
        if l > 1:
            sizes.append(inp)
    per_input = {"forward": 1, "central": 2, "complex_step": 1}[scheme]  # no cross-check
    return sum(per_input * s + (scheme == "forward") for s in sizes)


def _local_jacobian(f, v, kinked: bool, scheme, eps):
    """Finite-difference Jacobian of one local function ``f(v, pre)`` (``pre=True``: the
    pre-activation, whose sign pattern marks the kinks of a ReLU layer)."""
    pattern = (lambda u: jnp.real(f(u, True)) > 0) if kinked else None
    r = finite_difference_jacobian(  # a layer of the library: analytic, or piecewise (ReLU)
        lambda u: f(u, False), v, scheme, eps, pattern=pattern, return_info=True, cross_check=False
    )
    return r.value, r.kinks


def _reaches(kinked_rows: jax.Array, factor: jax.Array) -> jax.Array:
    """Entries of ``rows @ factor`` that a kinked entry of ``rows`` (1, m) reaches."""
    return (kinked_rows.astype(factor.dtype) @ (factor != 0).astype(factor.dtype)) > 0


def _local_layer(W, b, h_prev, fn, kinked, g, g_kink, first, scheme, eps):
    """One layer of the local chain: its factors by finite differences, then
    ``dJ/dw = g . dh/dw`` and ``g(l-1) = g . dh/dh(l-1)``; kink masks travel the same way
    (``g_kink`` ``None``: a network without kinks, no masks)."""

    def layer(W_, h_, b_, pre):
        z = W_ @ h_ + (b_ if b_ is not None else 0)
        return z if pre else fn(z)

    dh_dw, k_w = _local_jacobian(
        lambda w, pre: layer(w.reshape(W.shape), h_prev, b, pre), W.ravel(), kinked, scheme, eps
    )
    gW = (g @ dh_dw).reshape(W.shape)  # (H_l, H_{l-1})
    track = g_kink is not None
    kW = None
    if track:
        kW = (_reaches(g_kink, dh_dw) | jnp.any(k_w, axis=0)[None, :]).reshape(W.shape)
    gb = kb = None
    if b is not None:
        dh_db, k_b = _local_jacobian(
            lambda b_, pre: layer(W, h_prev, b_, pre), b, kinked, scheme, eps
        )
        gb = (g @ dh_db)[0]  # (H_l,)
        kb = (_reaches(g_kink, dh_db)[0] | jnp.any(k_b, axis=0)) if track else None
    if not first:
        dh_dh, k_h = _local_jacobian(
            lambda u, pre: layer(W, u, b, pre), h_prev, kinked, scheme, eps
        )
        if track:
            g_kink = _reaches(g_kink, dh_dh) | jnp.any(k_h, axis=0)[None, :]
        g = g @ dh_dh  # (1, H_{l-1}): g(l-1)
    return Layer(gW, gb), Layer(kW, kb), g, g_kink


def _local_sample(net, loss, params, x, y, fused, scheme, eps):
    """Local factors of one sample, each by finite differences of its own local function,
    chained backwards as jacobian_chain chains the exact ones; kink masks alongside."""
    trace = net.forward(params, x, output=not fused)  # x: one sample, checked by the caller
    L1 = net.L + 1
    if fused:  # the output activation is in the seed: dJ/dz(L+1), and layer L+1 gives z(L+1)
        seed, seed_kink = _local_jacobian(
            lambda z, pre: loss.logits_value(z, y), trace.z[L1], False, scheme, eps
        )
    else:
        seed, seed_kink = _local_jacobian(
            lambda a, pre: loss.value(a, y), trace.h[L1], False, scheme, eps
        )
    g = seed[None, :]  # (1, O)
    g_kink = seed_kink[None, :] if has_kinks(net) else None  # a sigmoid network: no masks
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


@highest_precision
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
    where = "local_finite_differences"
    eps, _ = check_step_args(scheme, eps, None, where)
    leaves = jax.tree_util.tree_leaves(params)
    check_eps_for_dtype(scheme, eps, jnp.result_type(*leaves) if leaves else jnp.float32, where)
    check_finite_leaves(params, "params", where)
    fused = use_fused(net, loss_, None)
    per_sample, kinks = jax.vmap(
        lambda xn, yn: _local_sample(net, loss_, params, xn, yn, fused, scheme, eps)
    )(xb, yb)
    s = reduction_scale(reduction, xb)
    grads = jax.tree_util.tree_map(lambda g: s * jnp.sum(g, axis=0), per_sample)
    J = s * summed_loss(net, loss_, net.forward(params, xb, output=not fused), yb, fused)
    if not return_info:
        return J, grads
    if has_kinks(net):
        kinks = jax.tree_util.tree_map(lambda k: jnp.any(k, axis=0), kinks)
    else:  # nothing can cross a kink: masks of False, not traced through the chain
        kinks = jax.tree_util.tree_map(lambda g: jnp.zeros(g.shape, bool), grads)
    return FiniteDifferenceResult((J, grads), local_evaluations(net, scheme), kinks)


# -- finite differences as gradient methods of networks -----------------------------------------


def has_kinks(net: Network) -> bool:
    """Whether a layer of ``net`` is a ReLU, whose kinks a finite-difference step can cross."""
    return any(net.activation(l).name == "relu" for l in range(1, net.L + 2))


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


@highest_precision
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
    return _global(
        net, loss, params, x, y, reduction, scheme, eps, chunk_size, return_info, mesh,
        "finite_differences",
    )  # fmt: skip


def _global(net, loss, params, x, y, reduction, scheme, eps, chunk_size, return_info, mesh,
            where):  # fmt: skip
    """:func:`finite_differences`, its errors labelled ``where``."""
    prepare(net, loss, params, x, y, reduction, where)
    J = objective(net, loss, reduction)
    r = fd_grad(
        lambda p: J(p, x, y),
        params,
        scheme,
        eps,
        chunk_size,
        (lambda p: relu_pattern(net, p, x)) if has_kinks(net) else None,  # none: less to trace
        True,
        mesh,
        True,
        where,
    )
    value = (J(params, x, y), r.value)
    return r._replace(value=value) if return_info else value


@highest_precision
def complex_step(net, loss, params, x, y, reduction="sum", *, return_info=False):
    """Complex-step differences of the objective: :func:`finite_differences` with
    ``scheme="complex_step"`` (P evaluations and a 4-evaluation cross-check, error near
    machine precision)."""
    return _global(
        net, loss, params, x, y, reduction, "complex_step", None, None, return_info, None,
        "complex_step",
    )  # fmt: skip
