r"""Back-propagation, written by hand, two ways; and ``jax.grad`` as the reference.

Every gradient method here has one signature, ``method(net, loss, params, x, y) -> (J, grads)``,
so that ``functools.partial(method, net, loss)`` is interchangeable with
``jax.value_and_grad(objective(net, loss))``. ``grads`` has the structure and type of
``params`` (a tuple of :class:`~functional_nn.Layer`), so two methods compare leaf by leaf.

**The chain the lecture draws.** The slide "Gradient of W(l)" writes

.. math::

    \frac{\partial J}{\partial w^{(l)}} =
    \underbrace{\frac{\partial J}{\partial w^{(l+1)}}}_{\text{already computed}} \cdot
    \underbrace{\frac{\partial w^{(l+1)}}{\partial h^{(l)}} \cdot
    \frac{\partial h^{(l)}}{\partial w^{(l)}}}_{\text{left to estimate}}

What is really computed once and reused is :math:`g^{(l)} = \partial J / \partial h^{(l)}`
(on the slide for W(1), :math:`\frac{\partial \hat y}{\partial w^{(2)}}
\frac{\partial w^{(2)}}{\partial h}` stands for :math:`\partial \hat y / \partial h`).
The code implements that recursion, per sample, with row vectors:

.. math::

    g^{(L+1)} &= \partial J / \partial \hat y                                  && (1, O) \\
    \partial J / \partial w^{(l)} &= g^{(l)} \cdot \partial h^{(l)}/\partial w^{(l)},
      \quad \partial h^{(l)}/\partial w^{(l)} = \mathrm{diag}(\mathrm{act}'(z^{(l)}))
      \otimes h^{(l-1)\top}                                      && (H_l, H_l H_{l-1}) \\
    g^{(l-1)} &= g^{(l)} \cdot \partial h^{(l)}/\partial h^{(l-1)},
      \quad \partial h^{(l)}/\partial h^{(l-1)} = \mathrm{diag}(\mathrm{act}'(z^{(l)})) W^{(l)}
                                                                                && (H_l, H_{l-1})

- :func:`jacobian_chain` materializes every factor (:func:`jacobian_factors`) and multiplies
  them backwards: the slide, literally. Cost and memory grow with the factor sizes.
- :func:`backprop` computes the same products without materializing them, by the delta rule
  :math:`\delta^{(l)} = g^{(l)} \odot \mathrm{act}'(z^{(l)})`,
  :math:`\partial J/\partial W^{(l)} = \delta^{(l)\top} h^{(l-1)}` (summed over the batch),
  :math:`g^{(l-1)} = \delta^{(l)} W^{(l)}`.
- :func:`autodiff` is ``jax.value_and_grad`` of :func:`objective`: the reference.

**Fused output.** With a sigmoid output and BCE (a loss whose ``fused_output`` is the
network's output), :math:`\delta^{(L+1)} = g^{(L+1)} \odot \sigma'(z^{(L+1)}) = \sigma(z) - y`
is taken in that closed form, and J from the logits, so both stay exact where
:math:`\hat y` rounds to 0 or 1 (there :math:`g^{(L+1)}` is infinite and
:math:`\sigma'(z)` is 0). :func:`jacobian_factors` then starts its chain at
:math:`\partial J/\partial z^{(L+1)}` and its output-layer factors are those of
:math:`z^{(L+1)}` (same shapes as the slide's); ``fused=False`` gives the slide's factors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from functional_nn._compile import one_program, scan
from functional_nn._util._validation import cast_like
from functional_nn.lecture._cost import (
    prepare,
    reduction_scale,
    summed_loss,
    use_fused,
)
from functional_nn.lecture._losses import Loss
from functional_nn.lecture._network import Layer, Network, Params

# -- the delta rule -----------------------------------------------------------------------------


def backprop(net: Network, loss: str | Loss, params: Params, x, y, reduction: str = "sum"):
    r"""Back-propagation by the delta rule, written by hand.

    .. math::

        \delta^{(L+1)} = \frac{\partial J}{\partial \hat y} \odot \mathrm{act}'(z^{(L+1)})
        \;(= \sigma(z) - y \text{ for sigmoid and BCE}), \qquad
        \frac{\partial J}{\partial W^{(l)}} = \delta^{(l)\top} h^{(l-1)}, \qquad
        \frac{\partial J}{\partial b^{(l)}} = \textstyle\sum_n \delta^{(l)}_n, \qquad
        \delta^{(l-1)} = (\delta^{(l)} W^{(l)}) \odot \mathrm{act}'(z^{(l-1)})

    These are the products of the lecture's chain, :math:`g^{(l)} \cdot \partial h^{(l)} /
    \partial w^{(l)}` and :math:`g^{(l)} \cdot \partial h^{(l)} / \partial h^{(l-1)}`, with the
    diagonal and Kronecker structure of the factors used instead of materialized. The first
    layer computes no input gradient. Cost: about three forward passes.

    Args:
        net, loss, params: the network, its loss (or the loss's name) and parameters.
        x: ``(D,)`` or ``(N, D)``.
        y: shape of ``y_hat``: ``(O,)`` or ``(N, O)``.
        reduction: ``"sum"`` (the lecture's J) or ``"mean"`` over samples.

    Returns:
        ``(J, grads)``, ``grads`` a tuple of :class:`~functional_nn.Layer` like ``params``.

    >>> import jax, jax.numpy as jnp
    >>> net = Network((4, 3, 2), bias=False)
    >>> params = net.init(jax.random.key(0))
    >>> x, y = jnp.ones((5, 4)), jnp.ones((5, 2))
    >>> J, grads = backprop(net, "bce", params, x, y)
    >>> [g.W.shape for g in grads]
    [(3, 4), (2, 3)]
    """
    loss, x, y = prepare(net, loss, params, x, y, reduction, "backprop")
    return _backprop(net, loss, reduction, params, x, y)


@one_program(3)
def _backprop(net: Network, loss: Loss, reduction: str, params: Params, x, y):
    """The delta rule on checked batches."""
    trace = net.forward(params, x)
    z, h = trace.z, trace.h
    s = reduction_scale(reduction, x)
    L1 = net.L + 1
    if use_fused(net, loss, None):
        delta = loss.logits_grad(z[L1], y)  # (N, O): sigma(z) - y
    else:
        delta = net.activation(L1).vjp(z[L1], loss.grad(h[L1], y))  # (N, O)
    delta = s * delta
    grads = [None] * L1
    for l in range(L1, 0, -1):  # l = L+1, ..., 1
        W, b = params[l - 1]
        dW = delta.T @ h[l - 1]  # (H_l, H_{l-1})
        db = jnp.sum(delta, axis=0) if b is not None else None  # (H_l,)
        grads[l - 1] = Layer(dW, db)
        if l > 1:
            g = delta @ W  # (N, H_{l-1}): g(l-1) = dJ/dh(l-1)
            delta = net.activation(l - 1).vjp(z[l - 1], g)  # (N, H_{l-1})
    J = s * summed_loss(net, loss, trace, y, use_fused(net, loss, None))
    return J, cast_like(tuple(grads), params)  # the dtype of params (bfloat16 stays bfloat16)


# -- the materialized chain ---------------------------------------------------------------------


class LayerFactors(NamedTuple):
    r"""The per-sample Jacobian factors of layer ``l`` (leading axis ``N`` for a batch).

    Attributes:
        dh_dh_prev: :math:`\partial h^{(l)} / \partial h^{(l-1)} = \mathrm{diag}(\mathrm{act}'
            (z^{(l)})) W^{(l)}`, ``(H_l, H_{l-1})``; ``None`` for ``l = 1`` (no input gradient
            is needed).
        dh_dw: :math:`\partial h^{(l)} / \partial w^{(l)} = \mathrm{diag}(\mathrm{act}'(z^{(l)}))
            \otimes h^{(l-1)\top}`, ``(H_l, H_l H_{l-1})``; ``w(l)`` is ``W(l)`` raveled row-major.
        dh_db: :math:`\partial h^{(l)} / \partial b^{(l)} = \mathrm{diag}(\mathrm{act}'(z^{(l)}))`,
            ``(H_l, H_l)``; ``None`` without bias.
    """

    dh_dh_prev: jax.Array | None
    dh_dw: jax.Array
    dh_db: jax.Array | None


class JacobianFactors(NamedTuple):
    r"""Every factor of the lecture's chain, per sample.

    Attributes:
        seed: where the chain starts: :math:`\partial J/\partial \hat y`, ``(1, O)``; or, when
            fused, :math:`\partial J / \partial z^{(L+1)}`, ``(1, O)``.
        layers: ``layers[l-1]`` holds the :class:`LayerFactors` of layer ``l = 1 .. L+1``.
            When fused, the output layer's are those of :math:`z^{(L+1)}` (``act' = 1``).
        fused: whether the output activation is folded into the loss.
    """

    seed: jax.Array
    layers: tuple[LayerFactors, ...]
    fused: bool


def _layer_factors(W, b, h_prev, dh_dz, first: bool) -> LayerFactors:
    """Factors of one layer, one sample: ``dh_dz = dh(l)/dz(l)`` (H_l, H_l), the diagonal
    ``diag(act'(z))`` of an elementwise activation or the full softmax Jacobian."""
    dh_dw = jnp.kron(dh_dz, h_prev[None, :])  # (H_l, H_l * H_{l-1}): dh_dz (I kron h^T)
    dh_dh_prev = None if first else dh_dz @ W  # (H_l, H_{l-1})
    return LayerFactors(dh_dh_prev, dh_dw, dh_dz if b is not None else None)


def _sample_factors(net: Network, loss: Loss, params: Params, x, y, fused: bool):
    """``JacobianFactors`` of one sample ``x`` (D,), ``y`` (O,)."""
    trace = net.forward(params, x)
    z, h = trace.z, trace.h
    L1 = net.L + 1
    layers = []
    for l in range(1, L1 + 1):
        W, b = params[l - 1]
        if l == L1 and fused:  # factors of z(L+1): the output activation is in the seed
            dh_dz = jnp.eye(z[l].shape[-1], dtype=z[l].dtype)
        else:
            dh_dz = net.activation(l).jacobian(z[l])  # (H_l, H_l)
        layers.append(_layer_factors(W, b, h[l - 1], dh_dz, first=l == 1))
    if fused:
        seed = loss.logits_grad(z[L1], y)[None, :]  # (1, O): dJ/dz(L+1) = sigma(z) - y
    else:
        seed = loss.grad(h[L1], y)[None, :]  # (1, O): dJ/dy_hat
    return JacobianFactors(seed, tuple(layers), None)  # fused is set outside vmap


def jacobian_factors(
    net: Network, loss: str | Loss, params: Params, x, y, fused: bool | None = None
) -> JacobianFactors:
    r"""Materialize every factor of the lecture's chain, per sample.

    For the lecture's network (D=4, H=3, O=2, MSE or ``fused=False``) the factors are
    ``dJ/dy_hat (1, 2)``, ``dy_hat/dh (2, 3)``, ``dy_hat/dw(2) (2, 6)`` and
    ``dh/dw(1) (3, 12)``; :func:`factor_table` prints them with these names.

    Args:
        net, loss, params: the network, its loss and parameters.
        x: ``(D,)`` or ``(N, D)``; a batch gives every factor a leading ``N`` axis.
        y: shape of ``y_hat``.
        fused: fold the output activation into the loss (``None``: whenever the loss fuses
            with the output, as :func:`objective` does).

    Returns:
        :class:`JacobianFactors`.
    """
    loss_, xb, yb = prepare(net, loss, params, x, y, "sum", "jacobian_factors")
    fused = use_fused(net, loss_, fused)
    factors = jax.vmap(lambda xn, yn: _sample_factors(net, loss_, params, xn, yn, fused))(xb, yb)
    if jnp.ndim(x) == 1:
        factors = jax.tree_util.tree_map(lambda a: a[0], factors)
    return factors._replace(fused=fused)


def _sample_chain(factors: JacobianFactors) -> tuple[Layer, ...]:
    """Multiply one sample's factors backwards: the slide, literally."""
    g = factors.seed  # (1, H_{L+1}): g(L+1)
    grads = [None] * len(factors.layers)
    for l in range(len(factors.layers), 0, -1):
        f = factors.layers[l - 1]
        H_l = f.dh_dw.shape[0]
        dJ_dw = g @ f.dh_dw  # (1, H_l * H_{l-1})
        dJ_db = (g @ f.dh_db)[0] if f.dh_db is not None else None  # (H_l,)
        grads[l - 1] = Layer(dJ_dw.reshape(H_l, -1), dJ_db)  # row-major w(l) -> W(l)
        if f.dh_dh_prev is not None:
            g = g @ f.dh_dh_prev  # (1, H_{l-1}): g(l-1)
    return tuple(grads)


# Chunks of samples bound jacobian_chain's memory: at most this many factor entries at a time.
_FACTOR_BUDGET = 1 << 24


def _factor_size(net: Network) -> int:
    """Entries of one sample's factors (``dh/dw``, ``dh/dh_prev`` and ``dh/dz`` blocks)."""
    pairs = zip(net.sizes[1:], net.sizes[:-1], strict=True)
    return sum(o * o * i + o * i + o * o for o, i in pairs) + net.O


def jacobian_chain(
    net: Network,
    loss: str | Loss,
    params: Params,
    x,
    y,
    reduction: str = "sum",
    fused: bool | None = None,
):
    r"""The gradient as the lecture's chain of materialized per-layer Jacobians.

    Per sample, :func:`jacobian_factors` are multiplied backwards,
    :math:`\partial J/\partial w^{(l)} = g^{(l)} \cdot \partial h^{(l)} / \partial w^{(l)}` and
    :math:`g^{(l-1)} = g^{(l)} \cdot \partial h^{(l)} / \partial h^{(l-1)}` starting from
    :math:`g^{(L+1)} = \partial J / \partial \hat y`; the per-sample gradients are summed
    (``"sum"``) or averaged (``"mean"``). Samples go through in chunks whose gradients are
    accumulated, so that at most ``2**24`` factor entries are alive at once (64 MiB in
    float32, 128 MiB in float64), or one sample's factors where those are larger (784-256-10:
    51.6M entries, 206 MiB in float32), plus one gradient: the peak does not grow with N.

    Args and Returns: as :func:`backprop`; ``fused`` as :func:`jacobian_factors`.
    """
    loss_, xb, yb = prepare(net, loss, params, x, y, reduction, "jacobian_chain")
    fused_ = use_fused(net, loss_, fused)
    return _jacobian_chain(net, loss_, reduction, fused_, _FACTOR_BUDGET, params, xb, yb)


@one_program(5)
def _jacobian_chain(net, loss_, reduction, fused_, budget, params, xb, yb):
    """The chain on checked batches, ``budget`` factor entries alive at once."""

    def chunk_sum(xs, ys):  # the summed gradient of a chunk of samples
        per_sample = jax.vmap(
            lambda xn, yn: _sample_chain(_sample_factors(net, loss_, params, xn, yn, fused_))
        )(xs, ys)
        return jax.tree_util.tree_map(lambda g: jnp.sum(g, axis=0), per_sample)

    N = xb.shape[0]
    chunk = max(1, min(N, budget // _factor_size(net)))
    n_full, rest = divmod(N, chunk)
    # accumulated in the dtype the products come in (float32 for bfloat16 params and float32 x)
    total = jax.tree_util.tree_map(lambda p: jnp.zeros(p.shape, jnp.result_type(p, xb)), params)
    if n_full == 1:  # one whole chunk: no loop to trace and compile
        total = jax.tree_util.tree_map(jnp.add, total, chunk_sum(xb[:chunk], yb[:chunk]))
    elif n_full:  # whole chunks, accumulated: memory for one chunk's factors, not N's
        xs = xb[: n_full * chunk].reshape(n_full, chunk, -1)
        ys = yb[: n_full * chunk].reshape(n_full, chunk, -1)

        def add(acc, c):
            return jax.tree_util.tree_map(jnp.add, acc, chunk_sum(*c)), None

        total, _ = scan(add, total, (xs, ys))
    if rest:
        total = jax.tree_util.tree_map(jnp.add, total, chunk_sum(xb[n_full * chunk :],
                                                               yb[n_full * chunk :]))  # fmt: skip
    s = reduction_scale(reduction, xb)
    grads = jax.tree_util.tree_map(lambda g: s * g, total)
    J = s * summed_loss(net, loss_, net.forward(params, xb), yb, use_fused(net, loss_, None))
    return J, cast_like(grads, params)


# -- the factors as a table ---------------------------------------------------------------------


def _factor_names(net: Network, fused: bool) -> list[tuple[str, str]]:
    """``(field path, lecture name)`` of every factor, in the order of the chain."""
    L1 = net.L + 1

    def hname(l: int) -> str:
        if l == L1:
            return f"z({l})" if fused else "y_hat"
        return "x" if l == 0 else ("h" if net.L == 1 else f"h({l})")

    rows = [("seed", f"dJ/d{hname(L1)}")]
    for l in range(L1, 0, -1):
        if l > 1:
            rows.append((f"layers[{l - 1}].dh_dh_prev", f"d{hname(l)}/d{hname(l - 1)}"))
        rows.append((f"layers[{l - 1}].dh_dw", f"d{hname(l)}/dw({l})"))
        if net.bias:
            rows.append((f"layers[{l - 1}].dh_db", f"d{hname(l)}/db({l})"))
    return rows


def factor_table(net: Network, factors: JacobianFactors) -> str:
    """A readable table of every factor: its name on the slide, its field, its shape.

    Shapes are per sample (a batch's leading ``N`` is dropped).

    >>> import jax, jax.numpy as jnp
    >>> net = Network((4, 3, 2), bias=False)
    >>> f = jacobian_factors(net, "mse", net.init(jax.random.key(0)), jnp.ones(4), jnp.ones(2))
    >>> print(factor_table(net, f))
    factor         shape    field
    dJ/dy_hat      (1, 2)   seed
    dy_hat/dh      (2, 3)   layers[1].dh_dh_prev
    dy_hat/dw(2)   (2, 6)   layers[1].dh_dw
    dh/dw(1)       (3, 12)  layers[0].dh_dw
    P = 18
    """
    rows = []
    for path, name in _factor_names(net, bool(factors.fused)):
        leaf: Any = factors
        for part in path.replace("]", "").replace("[", ".").split("."):
            leaf = leaf[int(part)] if part.isdigit() else getattr(leaf, part)
        rows.append((name, str(tuple(leaf.shape[-2:])), path))
    w0 = max(len("factor"), *(len(r[0]) for r in rows)) + 3
    w1 = max(len("shape"), *(len(r[1]) for r in rows)) + 2
    lines = [f"{'factor':<{w0}}{'shape':<{w1}}field"]
    lines += [f"{a:<{w0}}{b:<{w1}}{c}" for a, b, c in rows]
    lines.append(f"P = {net.num_params()}")
    return "\n".join(lines)
