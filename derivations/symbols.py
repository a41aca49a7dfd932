"""The activations as SymPy functions whose derivative rules are the proved identities.

``sigmoid`` and ``softplus`` are written as :class:`sympy.Function` subclasses so that the
derivatives of whole networks stay in terms of ``sigmoid(z)`` (short, and simplifiable by
algebra alone) instead of nested exponentials. Their derivative rules,
``sigmoid' = sigmoid (1 - sigmoid)`` and ``softplus' = sigmoid``, are exactly the identities
that :mod:`derivations.activations` and :mod:`derivations.losses` prove from the exponential
definitions; ``rewrite(sympy.exp)`` returns those definitions. Lambdified, they print as
``jax.nn.sigmoid`` and ``jax.nn.softplus``: JAX's own, not the library's.
"""

from __future__ import annotations

import jax
import sympy as sp

__all__ = ["JAX_MODULES", "relu", "sigmoid", "softplus", "ACTIVATIONS"]


class sigmoid(sp.Function):  # noqa: N801 -- a SymPy function, named as printed
    r""":math:`\sigma(z) = 1 / (1 + e^{-z})`, with :math:`\sigma' = \sigma (1 - \sigma)`."""

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return 1 / (1 + sp.exp(-z))

    def _latex(self, printer):
        return r"\sigma\left(" + printer._print(self.args[0]) + r"\right)"


class softplus(sp.Function):  # noqa: N801
    r""":math:`\mathrm{softplus}(z) = \log(1 + e^z)`, with :math:`\mathrm{softplus}' = \sigma`."""

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_exp(self, z, **kwargs):
        return sp.log(1 + sp.exp(z))

    def _latex(self, printer):
        return r"\operatorname{softplus}\left(" + printer._print(self.args[0]) + r"\right)"


def relu(z):
    r""":math:`\mathrm{ReLU}(z)` as a Piecewise: ``z`` for ``z > 0``, else 0 (so relu'(0) = 0).

    Not ``Max(z, 0)``: SymPy's JAX printer prints ``Max`` as a call that fails.
    """
    return sp.Piecewise((z, z > 0), (0, True))


ACTIVATIONS = {
    "sigmoid": sigmoid,
    "tanh": sp.tanh,
    "relu": relu,
    "identity": lambda z: z,
}
"""The library's activations by name, as SymPy callables."""

JAX_MODULES = [{"sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus}, "jax"]
"""``lambdify(..., modules=JAX_MODULES)``: JAX's own sigmoid and softplus, then jax.numpy."""
