r"""Losses: the per-sample value and :math:`\partial J / \partial \hat y`, written by hand.

The lecture trains a classifier with the binary cross-entropy

.. math:: J = -\sum_n \big(y_n \log \hat y_n + (1 - y_n) \log(1 - \hat y_n)\big)

and a regression network with the MSE :math:`J = \lVert \hat y - y \rVert_2^2`, whose
gradient it gives as :math:`\partial J / \partial \hat y = 2(\hat y - y)` (no factor 1/2).
Beyond the lecture, ``cross_entropy`` :math:`-\sum_o y_o \log \hat y_o` serves a softmax
output over several classes.

Each :class:`Loss` maps ``(y_hat, y)`` of shape ``(O,)`` or ``(N, O)`` to the per-sample value
(summed over the ``O`` outputs: shape ``()`` or ``(N,)``) and to ``dJ/dy_hat`` of the shape of
``y_hat``. Reducing over samples (``"sum"``, the lecture's, or ``"mean"``) is
:func:`functional_nn.objective`'s job.

**Fused with the output activation.** ``sigmoid`` followed by BCE is computed from the logit
``z`` as :math:`\mathrm{softplus}(z) - y z` with :math:`\partial J/\partial z = \sigma(z) - y`
(and ``softmax`` followed by cross-entropy as :math:`\mathrm{logsumexp}(z) - y \cdot z`, with
:math:`\partial J/\partial z = \hat y - y`).
This is exact where the composition is not: at ``z = 1e4`` the sigmoid rounds to exactly 1 and
``log(1 - y_hat)`` is ``-inf``, while the fused form gives exactly ``1e4``. Whenever the network's
output activation is the loss's ``fused_output``, the objective and every gradient method use
the fused form.

No broadcasting: ``y_hat`` and ``y`` must have the same shape, or a ``ValueError`` says how
they differ. Targets are checked for their range (BCE: in [0, 1]) and for being finite whenever
they are concrete arrays; under :func:`jax.jit` only shapes can be checked.

>>> import jax.numpy as jnp
>>> float(bce.logits_value(jnp.array([1e4, -1e4]), jnp.array([0.0, 1.0])).sum())
20000.0
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from functional_nn._util._validation import check_array, is_concrete, value_stats
from functional_nn.lecture._activations import sigmoid, softmax


@dataclass(frozen=True)
class Loss:
    """A loss: per-sample value and ``dJ/dy_hat``, optionally fused with an output activation.

    Frozen and hashable, so that it can be a static argument of :func:`jax.jit`.

    Attributes:
        name: the name it is known by (``get_loss(name)``).
        value: ``(y_hat, y) -> J_n``, the per-sample loss summed over outputs, shape
            ``y_hat.shape[:-1]``.
        grad: ``(y_hat, y) -> dJ_n/dy_hat``, shape of ``y_hat``.
        fused_output: name of the output activation that the loss fuses with, or ``None``.
        logits_value: ``(z, y) -> J_n`` for ``y_hat = fused_output(z)``, computed from ``z``.
        logits_grad: ``(z, y) -> dJ_n/dz``, the stable closed form of
            ``grad(act(z), y) * act'(z)``.
        target_range: closed interval the targets must lie in, or ``None`` for any real.
        rows_sum_to_one: whether each target row must be a probability vector (one-hot or
            soft labels), as cross-entropy over classes needs.
        outputs: the output activations the loss is defined for (BCE needs probabilities
            from a sigmoid, cross-entropy a softmax), or ``None`` for any output (MSE). Any
            other pair is refused at trace time: BCE on an identity output is ``nan``, BCE on
            a softmax or cross-entropy on a sigmoid reach ``inf`` at large logits.
    """

    name: str
    value: Callable[[jax.Array, jax.Array], jax.Array]
    grad: Callable[[jax.Array, jax.Array], jax.Array]
    fused_output: str | None = None
    logits_value: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    logits_grad: Callable[[jax.Array, jax.Array], jax.Array] | None = None
    target_range: tuple[float, float] | None = None
    rows_sum_to_one: bool = False
    outputs: tuple[str, ...] | None = None

    def fuses_with(self, output: str) -> bool:
        """Whether this loss is computed from the logits of an ``output`` activation."""
        return self.fused_output is not None and self.fused_output == output


def check_same_shape(y_hat: jax.Array, y: jax.Array, where: str) -> None:
    """Raise ``ValueError`` unless ``y_hat`` and ``y`` have the same shape (no broadcasting)."""
    if jnp.shape(y_hat) != jnp.shape(y):
        hint = ""
        if jnp.ndim(y) == jnp.ndim(y_hat) - 1 and jnp.shape(y_hat)[-1] == 1:
            hint = " (reshape y to a column: y[:, None])"
        raise ValueError(
            f"{where}: y has shape {jnp.shape(y)} but y_hat has shape {jnp.shape(y_hat)}; "
            f"they must be equal, nothing is broadcast{hint}"
        )


def check_targets(loss: Loss, y: jax.Array, where: str) -> None:
    """Raise ``ValueError`` if a concrete ``y`` is non-finite or outside the loss's range.

    The check reduces ``y`` where it lives (on its device for a ``jax.Array``) and reads back
    a few counts: ``y`` itself is never copied to the host.
    """
    if not is_concrete(y):
        return
    check_array(y, "y", where)
    lo, hi = loss.target_range if loss.target_range is not None else (None, None)
    rows_tol = 1e-6 * jnp.shape(y)[-1] if loss.rows_sum_to_one and jnp.ndim(y) else 0.0
    stats = value_stats(y, lo, hi, rows_tol)
    if stats.nonfinite:
        raise ValueError(f"{where}: y has {stats.nonfinite} non-finite entries")
    if stats.below or stats.above:
        raise ValueError(
            f"{where}: loss {loss.name!r} needs targets in [{lo}, {hi}], but y has "
            f"{stats.below + stats.above} entries outside it (min {stats.min:g}, "
            f"max {stats.max:g})"
        )
    if stats.rows_off:
        raise ValueError(
            f"{where}: loss {loss.name!r} needs each row of y to sum to 1 (one-hot or soft "
            f"labels), but {stats.rows_off} rows do not (one sums to {stats.row_sum:g})"
        )


def check_output(loss: Loss, output: str, where: str) -> None:
    """Raise ``ValueError`` unless ``loss`` is defined for a network with this ``output``."""
    if loss.outputs is not None and output not in loss.outputs:
        need = " or ".join(repr(o) for o in loss.outputs)
        others = sorted(
            n for n, other in LOSSES.items() if other.outputs is None or output in other.outputs
        )
        raise ValueError(
            f"{where}: loss {loss.name!r} needs a network with output={need}; got "
            f"output={output!r} (use Network(..., output={need}), or a loss for this output: "
            f"{others})"
        )


# -- binary cross-entropy -----------------------------------------------------------------------


def softplus(z: jax.Array) -> jax.Array:
    r""":math:`\log(1 + e^z)`, as :math:`\max(z, 0) + \log(1 + e^{-|z|})`: exact at any ``|z|``.

    The branch is taken on the real part, so a complex step goes through it analytically.
    """
    positive = jnp.real(z) >= 0
    e = jnp.exp(jnp.where(positive, -z, z))  # exp(-|z|): never overflows
    return jnp.where(positive, z, jnp.zeros_like(z)) + jnp.log1p(e)


def _bce_value(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`-\sum_o \big(y \log \hat y + (1 - y) \log(1 - \hat y)\big)`, with 0 log 0 = 0."""
    check_same_shape(y_hat, y, "bce")
    # 0 log 0 = 0 with a derivative that stays finite: where a label's weight is 0, its log
    # reads 1 (xlogy's rule is 0/0 there: grad at y_hat = y = 1 was nan, the exact one is -1)
    hit = y * jnp.log(jnp.where(y == 0, jnp.ones_like(y_hat), y_hat))
    miss = (1 - y) * jnp.log1p(-jnp.where(y == 1, jnp.zeros_like(y_hat), y_hat))
    return -jnp.sum(hit + miss, axis=-1)


def _bce_grad(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\partial J / \partial \hat y = (\hat y - y) / (\hat y (1 - \hat y))`."""
    check_same_shape(y_hat, y, "bce")
    # -y / y_hat + (1 - y) / (1 - y_hat), each term 0 where its label weight is: finite (-1 / y_hat)
    # at y_hat = y = 1, where the quotient above is 0/0
    hit = y / jnp.where(y == 0, jnp.ones_like(y_hat), y_hat)
    miss = (1 - y) / (1 - jnp.where(y == 1, jnp.zeros_like(y_hat), y_hat))
    return miss - hit


def _bce_logits_value(z: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`J = \sum_o \mathrm{softplus}(z) - y z`, equal to the BCE of :math:`\sigma(z)`."""
    check_same_shape(z, y, "bce (on logits)")
    # max(z, 0) - y z first, then log(1 + e^-|z|): softplus(z) - y z rounds the small loss
    # of a confident right logit away (float32: 0 from z = 14.7 at y = 1, where it is 4e-7)
    positive = jnp.real(z) >= 0
    linear = jnp.where(positive, z * (1 - y), -y * z)
    return jnp.sum(linear + jnp.log1p(jnp.exp(jnp.where(positive, -z, z))), axis=-1)


def _bce_logits_grad(z: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\partial J / \partial z = \sigma(z) - y`."""
    check_same_shape(z, y, "bce (on logits)")
    # (1 - y) sigma(z) - y sigma(-z), equal since sigma(z) + sigma(-z) = 1: sigma(z) - y rounds
    # the gradient of a confident right logit to 0 (float32, y = 1: from z = 16.64)
    return (1 - y) * sigmoid.fn(z) - y * sigmoid.fn(-z)


bce = Loss(
    "bce",
    _bce_value,
    _bce_grad,
    fused_output="sigmoid",
    logits_value=_bce_logits_value,
    logits_grad=_bce_logits_grad,
    target_range=(0.0, 1.0),
    outputs=("sigmoid",),
)
"""Binary cross-entropy; fused with a ``sigmoid`` output (computed from the logits)."""


# -- mean squared error -------------------------------------------------------------------------


def _mse_value(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r"""The lecture's :math:`\lVert \hat y - y \rVert_2^2` per sample (no 1/2, no mean over O)."""
    check_same_shape(y_hat, y, "mse")
    r = y_hat - y
    return jnp.sum(r * r, axis=-1)


def _mse_grad(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\partial J / \partial \hat y = 2 (\hat y - y)`."""
    check_same_shape(y_hat, y, "mse")
    return 2 * (y_hat - y)


mse = Loss("mse", _mse_value, _mse_grad)
"""Squared error :math:`\\lVert \\hat y - y \\rVert^2` per sample, as on the lecture's slide."""


# -- cross-entropy over classes ------------------------------------------------------------------


def logsumexp(z: jax.Array) -> jax.Array:
    r""":math:`\log \sum_j e^{z_j}` over the last axis, shifted by the largest real part."""
    m = jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=-1, keepdims=True))
    return m[..., 0] + jnp.log(jnp.sum(jnp.exp(z - m), axis=-1))


def _ce_value(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`-\sum_o y_o \log \hat y_o`, with 0 log 0 = 0."""
    check_same_shape(y_hat, y, "cross_entropy")
    return -jnp.sum(y * jnp.log(jnp.where(y == 0, jnp.ones_like(y_hat), y_hat)), axis=-1)


def _ce_grad(y_hat: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\partial J / \partial \hat y = -y / \hat y`."""
    check_same_shape(y_hat, y, "cross_entropy")
    return -y / jnp.where(y == 0, jnp.ones_like(y_hat), y_hat)  # 0 where y is, at y_hat = 0 too


def _ce_logits_value(z: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`J = \mathrm{logsumexp}(z) \sum_o y_o - \sum_o y_o z_o`: the cross-entropy of
    :math:`\mathrm{softmax}(z)`, exact at any logit."""
    check_same_shape(z, y, "cross_entropy (on logits)")
    return logsumexp(z) * jnp.sum(y, axis=-1) - jnp.sum(y * z, axis=-1)


def _ce_logits_grad(z: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\partial J / \partial z = \mathrm{softmax}(z) \sum_o y_o - y`, which is
    :math:`\hat y - y` for one-hot (or any normalized) ``y``."""
    check_same_shape(z, y, "cross_entropy (on logits)")
    return softmax.fn(z) * jnp.sum(y, axis=-1, keepdims=True) - y


cross_entropy = Loss(
    "cross_entropy",
    _ce_value,
    _ce_grad,
    fused_output="softmax",
    logits_value=_ce_logits_value,
    logits_grad=_ce_logits_grad,
    target_range=(0.0, 1.0),
    rows_sum_to_one=True,
    outputs=("softmax",),
)
"""Cross-entropy over classes, for one-hot (or soft) targets; fused with a ``softmax`` output."""


LOSSES: dict[str, Loss] = {loss.name: loss for loss in (bce, mse, cross_entropy)}
"""Every loss by name."""


def get_loss(name: str | Loss) -> Loss:
    """The :class:`Loss` called ``name`` (a :class:`Loss` is returned as it is).

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, Loss):
        return name
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}") from None
