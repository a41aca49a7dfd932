r"""The objective J and the checks every gradient method starts with; ``jax.grad`` of J.

:func:`objective` is the lecture's :math:`J(\theta) = \sum_n J_n` (or its mean over samples),
computed from the logits when the loss fuses with the network's output. :func:`prepare` checks
the arguments of every gradient method in one place, so that all of them refuse the same
inputs with the same message. :func:`autodiff`, ``jax.value_and_grad`` of :func:`objective`,
is the reference every hand-written method is checked against.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from functional_nn._compile import one_program
from functional_nn._util._validation import check_array
from functional_nn.lecture._losses import (
    Loss,
    check_output,
    check_same_shape,
    check_targets,
    get_loss,
)
from functional_nn.lecture._network import Network, Params

REDUCTIONS = ("sum", "mean")

GradientMethod = Callable[..., tuple[jax.Array, Params]]
"""``method(net, loss, params, x, y) -> (J, grads)``."""


# -- the objective ------------------------------------------------------------------------------


def prepare(net: Network, loss: str | Loss, params: Params, x, y, reduction: str, where: str):
    """Check every argument at trace time; return the Loss and ``x, y`` as batches.

    Shapes, dtypes and the loss/output pair are checked always (at trace time under
    :func:`jax.jit`, costing nothing); the values of concrete ``params``, ``x`` and ``y``
    (finite, targets in range) are reduced where they live, one small read-back each. Every
    gradient method and :func:`objective` starts here, so all refuse the same inputs.
    """
    if not isinstance(net, Network):
        raise ValueError(f"{where}: net must be a Network; got {type(net).__name__}")
    loss = get_loss(loss)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{where}: reduction must be one of {REDUCTIONS}; got {reduction!r}")
    check_output(loss, net.output, where)
    net.check_params(params, where)
    net.check_x(x, where)
    check_array(y, "y", where, " of the shape of y_hat")
    y_hat_shape = jnp.shape(x)[:-1] + (net.O,)
    if jnp.shape(y) != y_hat_shape:
        check_same_shape(jnp.zeros(y_hat_shape), y, where)
    check_targets(loss, y, where)
    if jnp.ndim(x) == 1:  # a single sample is a batch of one; sums are unchanged
        x, y = x[None], y[None]
    return loss, x, y


def reduction_scale(reduction: str, x: jax.Array) -> float:
    """1 for ``"sum"`` (the lecture's J), ``1/N`` for ``"mean"`` over the ``N`` samples."""
    return 1.0 if reduction == "sum" else 1.0 / x.shape[0]


def use_fused(net: Network, loss: Loss, fused: bool | None) -> bool:
    """Whether J starts from the logits: ``fused`` as given (``None``: whenever the loss fuses
    with the network's output)."""
    if fused is None:
        return loss.fuses_with(net.output)
    if not isinstance(fused, bool):
        raise TypeError(f"fused must be None, True or False; got {fused!r}")
    if fused and not loss.fuses_with(net.output):
        raise ValueError(
            f"loss {loss.name!r} has no fused form for a {net.output!r} output "
            f"(it fuses with {loss.fused_output!r})"
        )
    return bool(fused)


def summed_loss(net: Network, loss: Loss, trace, y, fused: bool) -> jax.Array:
    """Summed loss; from the logits ``z(L+1)`` when fused."""
    if fused:
        return jnp.sum(loss.logits_value(trace.z[-1], y))
    return jnp.sum(loss.value(trace.h[-1], y))


def objective(net: Network, loss: str | Loss, reduction: str = "sum") -> Callable:
    r"""The training objective :math:`J(\theta) = \sum_n J_n`, as a function ``J(params, x, y)``.

    With ``reduction="mean"`` the sum over samples is divided by ``N``. When the loss fuses
    with the network's output (sigmoid and BCE), :math:`J_n` is computed from the logits.

    Args:
        net: the network.
        loss: a :class:`~functional_nn.Loss` or its name (``"bce"``, ``"mse"``).
        reduction: ``"sum"`` (the lecture's) or ``"mean"``.

    Returns:
        ``J(params, x, y) -> scalar``, with ``x`` of shape ``(D,)`` or ``(N, D)`` and ``y`` of
        the shape of ``y_hat``.

    >>> import jax, jax.numpy as jnp
    >>> net = Network((4, 2), bias=False)  # multi-output logistic regression
    >>> J = objective(net, "bce")
    >>> round(float(J(net.init(jax.random.key(0)), jnp.zeros((5, 4)), jnp.ones((5, 2)))), 4)
    6.9315
    """
    get_loss(loss)  # fail early on an unknown name

    def J(params: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        loss_, xb, yb = prepare(net, loss, params, x, y, reduction, "objective")
        return _checked_objective(net, loss_, reduction, params, xb, yb)

    return J


@one_program(3)
def _checked_objective(net: Network, loss: Loss, reduction: str, params: Params, xb, yb):
    """J of batches whose arguments :func:`prepare` has checked."""
    fused = use_fused(net, loss, None)
    trace = net.forward(params, xb, output=not fused)
    return reduction_scale(reduction, xb) * summed_loss(net, loss, trace, yb, fused)


def autodiff(net: Network, loss: str | Loss, params: Params, x, y, reduction: str = "sum"):
    """The reference: ``jax.value_and_grad(objective(net, loss, reduction))(params, x, y)``.

    The arguments are checked once, before differentiating (so concrete ``params`` are
    checked for finite values too, as every other method does)."""
    loss_, xb, yb = prepare(net, loss, params, x, y, reduction, "autodiff")
    return _autodiff(net, loss_, reduction, params, xb, yb)


@one_program(3)
def _autodiff(net, loss, reduction, params, xb, yb):
    return jax.value_and_grad(lambda p: _checked_objective(net, loss, reduction, p, xb, yb))(params)
