r"""Activation functions, each with its derivative written out beside it.

The lecture's layers are :math:`h^{(l)} = \mathrm{act}(z^{(l)})` with
:math:`z^{(l)} = W^{(l)} h^{(l-1)} + b^{(l)}`. Back-propagation needs
:math:`\mathrm{act}'(z^{(l)})`, so every :class:`Activation` carries both functions of ``z``,
written by hand (never by ``jax.grad``) and checked against it in the tests.

Conventions:

- Every function follows the dtype of ``z`` and accepts complex ``z`` (the complex-step
  derivative perturbs the imaginary part): where a branch must be chosen, it is chosen on the
  real part, which the complex step leaves unchanged.
- The hidden activations are elementwise; ``softmax``, an output for several classes, is not:
  its ``jacobian`` is the full ``diag(s) - s s^T`` and its ``vjp`` uses it.
- ``relu'(0) = 0``, as in :func:`jax.nn.relu` and PyTorch.
- ``sigmoid`` never overflows: it evaluates ``exp(-|z|)`` only, so ``|z|`` up to ``1e4`` (and
  beyond) gives exactly 0 or 1 in float32 and float64, with no ``inf`` or ``nan`` on either
  branch (which also keeps ``jax.grad`` of it finite).

>>> import jax.numpy as jnp
>>> sigmoid(jnp.array([-1e4, 0.0, 1e4])).tolist()
[0.0, 0.5, 1.0]
>>> relu.derivative(jnp.array([-1.0, 0.0, 2.0])).tolist()
[0.0, 0.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp


@dataclass(frozen=True)
class Activation:
    """An elementwise activation and its derivative, both functions of ``z``.

    Frozen and hashable, so that it can be part of a static argument of :func:`jax.jit`.

    Attributes:
        name: the name a :class:`~functional_nn.Network` refers to it by.
        fn: ``z -> act(z)``, elementwise, any shape.
        derivative: ``z -> act'(z)``, elementwise, same shape and dtype as ``z``.
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    derivative: Callable[[jax.Array], jax.Array]

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.fn(z)

    def jacobian(self, z: jax.Array) -> jax.Array:
        r"""Per-sample Jacobian :math:`\partial h / \partial z = \mathrm{diag}(\mathrm{act}'(z))`.

        Args:
            z: pre-activation, shape ``(H,)`` or ``(N, H)``.

        Returns:
            shape ``(H, H)`` or ``(N, H, H)``.
        """
        d = self.derivative(z)
        eye = jnp.eye(d.shape[-1], dtype=d.dtype)
        return d[..., :, None] * jnp.broadcast_to(eye, d.shape + d.shape[-1:])

    def vjp(self, z: jax.Array, g: jax.Array) -> jax.Array:
        r"""The vector-Jacobian product :math:`g \cdot \partial h / \partial z`.

        For an elementwise activation it is :math:`g \odot \mathrm{act}'(z)`.
        """
        return g * self.derivative(z)


def _positive(z: jax.Array) -> jax.Array:
    """The branch on the real part, so that a complex step does not change it."""
    return jnp.real(z) >= 0


# -- sigmoid -------------------------------------------------------------------------------------


def _sigmoid(z: jax.Array) -> jax.Array:
    r""":math:`\sigma(z) = 1 / (1 + e^{-z})`, evaluated through :math:`e^{-|z|}` only."""
    positive = _positive(z)
    e = jnp.exp(jnp.where(positive, -z, z))  # exp(-|z|) in (0, 1]: never overflows
    d = 1 + e
    return jnp.where(positive, 1 / d, e / d)


def _sigmoid_derivative(z: jax.Array) -> jax.Array:
    r""":math:`\sigma'(z) = \sigma(z)\,(1 - \sigma(z)) = \sigma(z)\,\sigma(-z)`.

    Written as :math:`\sigma(z)\sigma(-z) = e^{-|z|} / (1 + e^{-|z|})^2`: the same value, but
    ``1 - sigma(z)`` would cancel to a few correct digits (or to 0) once ``sigma(z)`` nears 1,
    while this keeps full relative precision at every ``z``.
    """
    e = jnp.exp(jnp.where(_positive(z), -z, z))  # exp(-|z|)
    return e / ((1 + e) * (1 + e))


# -- relu ----------------------------------------------------------------------------------------


def _relu(z: jax.Array) -> jax.Array:
    r""":math:`\mathrm{ReLU}(z) = z` if :math:`z > 0`, else 0."""
    return jnp.where(jnp.real(z) > 0, z, jnp.zeros_like(z))


def _relu_derivative(z: jax.Array) -> jax.Array:
    r""":math:`\mathrm{ReLU}'(z) = 1` if :math:`z > 0`, else 0; so :math:`\mathrm{ReLU}'(0) = 0`."""
    return jnp.where(jnp.real(z) > 0, jnp.ones_like(z), jnp.zeros_like(z))


# -- tanh ----------------------------------------------------------------------------------------


def _tanh(z: jax.Array) -> jax.Array:
    r""":math:`\tanh(z)`."""
    return jnp.tanh(z)


def _tanh_derivative(z: jax.Array) -> jax.Array:
    r""":math:`\tanh'(z) = 1 - \tanh(z)^2 = 4\sigma'(2z) = 4 e^{-2|z|} / (1 + e^{-2|z|})^2`.

    The last form, :math:`\mathrm{sech}^2 z`, keeps full relative precision where
    ``1 - tanh(z)**2`` cancels (``|z|`` beyond a few units) and never overflows.
    """
    return 4 * _sigmoid_derivative(2 * z)


# -- identity ------------------------------------------------------------------------------------


def _identity(z: jax.Array) -> jax.Array:
    r""":math:`z`: the output of a regression network (the lecture removes the output sigmoid)."""
    return z


def _identity_derivative(z: jax.Array) -> jax.Array:
    r""":math:`1`."""
    return jnp.ones_like(z)


sigmoid = Activation("sigmoid", _sigmoid, _sigmoid_derivative)
"""The logistic sigmoid :math:`\\sigma(z) = 1/(1+e^{-z})`, :math:`\\sigma' = \\sigma(1-\\sigma)`."""

relu = Activation("relu", _relu, _relu_derivative)
"""The rectified linear unit, with the convention ``relu'(0) = 0`` of :func:`jax.nn.relu`."""

tanh = Activation("tanh", _tanh, _tanh_derivative)
"""The hyperbolic tangent, with :math:`\\tanh' = 1 - \\tanh^2`."""

identity = Activation("identity", _identity, _identity_derivative)
"""No activation: :math:`h = z`. A network of identities collapses to one linear map."""

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (sigmoid, relu, tanh, identity)}
"""Every elementwise activation by name: those a hidden layer may use."""


# -- softmax: an output activation that is not elementwise ---------------------------------------


def _softmax(z: jax.Array) -> jax.Array:
    r""":math:`\mathrm{softmax}(z)_i = e^{z_i} / \sum_j e^{z_j}` over the last axis, shifted by the
    largest real part (a constant, so a complex step passes through) to never overflow."""
    m = jax.lax.stop_gradient(jnp.max(jnp.real(z), axis=-1, keepdims=True))
    e = jnp.exp(z - m)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _softmax_derivative(z: jax.Array) -> jax.Array:
    raise ValueError(
        "softmax is not elementwise: it has no derivative act'(z) of the shape of z; "
        "use softmax.jacobian(z) (diag(s) - s s^T) or softmax.vjp(z, g)"
    )


@dataclass(frozen=True)
class Softmax(Activation):
    r"""The softmax output: its Jacobian is full, :math:`\partial s/\partial z = \mathrm{diag}(s) -
    s s^\top`, so ``jacobian`` and ``vjp`` replace the elementwise rules."""

    def jacobian(self, z: jax.Array) -> jax.Array:
        """``diag(s) - s s^T`` per sample: ``(H, H)`` or ``(N, H, H)``."""
        s = _softmax(z)
        eye = jnp.broadcast_to(jnp.eye(s.shape[-1], dtype=s.dtype), s.shape + s.shape[-1:])
        return s[..., :, None] * eye - s[..., :, None] * s[..., None, :]

    def vjp(self, z: jax.Array, g: jax.Array) -> jax.Array:
        r""":math:`g (\mathrm{diag}(s) - s s^\top) = s \odot (g - \langle g, s \rangle)`."""
        s = _softmax(z)
        return s * (g - jnp.sum(g * s, axis=-1, keepdims=True))


softmax = Softmax("softmax", _softmax, _softmax_derivative)
"""Softmax over the last axis: the output of a multi-class network (with ``cross_entropy``)."""

OUTPUT_ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": sigmoid,
    "identity": identity,
    "softmax": softmax,
}
"""The activations an output layer may use."""


def get_activation(name: str | Activation) -> Activation:
    """The :class:`Activation` called ``name`` (an :class:`Activation` is returned as it is).

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, Activation):
        return name
    known = {**ACTIVATIONS, **OUTPUT_ACTIVATIONS}
    try:
        return known[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(known)}") from None
