r"""Activations (slides "Logistic regression", "Activation function"): each derivative derived
and each identity the library relies on proved, by simplifying the difference to 0.

===========  ====================================  ==========================================
activation   derived                               identity proved
===========  ====================================  ==========================================
sigmoid      d/dz 1/(1+e^{-z})                     = sigma (1 - sigma)
tanh         d/dz tanh z                           = 1 - tanh^2
relu         d/dz Piecewise((z, z>0), (0, True))   = Piecewise((1, z>0), (0, True)): 0 at 0
identity     d/dz z                                = 1
===========  ====================================  ==========================================
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from derivations.symbols import relu

__all__ = ["Identity", "IDENTITIES", "z", "prove"]

z = sp.Symbol("z", real=True)


class Identity(NamedTuple):
    """A claimed closed form, what it is claimed equal to, and where it is used."""

    name: str
    lhs: sp.Expr  # derived by SymPy
    rhs: sp.Expr  # the closed form the library writes by hand
    slide: str
    checks: str  # the library function it checks


def prove(identity: Identity) -> bool:
    """True when ``lhs - rhs`` simplifies to exactly 0 (a proof, not a sample)."""
    difference = sp.simplify((identity.lhs - identity.rhs).rewrite(sp.exp))
    if isinstance(difference, sp.Piecewise):
        difference = sp.simplify(sp.piecewise_fold(difference))
    return difference == 0


_sigma = 1 / (1 + sp.exp(-z))

IDENTITIES = [
    Identity(
        "sigmoid'",
        sp.diff(_sigma, z),
        _sigma * (1 - _sigma),
        "Logistic regression",
        "functional_nn.sigmoid.derivative",
    ),
    Identity(
        "sigmoid' (tails)",
        sp.diff(_sigma, z),
        _sigma * (1 / (1 + sp.exp(z))),
        "Logistic regression",
        "functional_nn.sigmoid.derivative (sigma(z) sigma(-z), exact in the tails)",
    ),
    Identity(
        "tanh'",
        sp.diff(sp.tanh(z), z),
        1 - sp.tanh(z) ** 2,
        "Activation function",
        "functional_nn.tanh.derivative",
    ),
    Identity(
        "tanh' (tails)",
        sp.diff(sp.tanh(z), z),
        (4 * sp.exp(-2 * z) / (1 + sp.exp(-2 * z)) ** 2).rewrite(sp.exp),
        "Activation function",
        "functional_nn.tanh.derivative (4 sigma'(2z), exact in the tails)",
    ),
    Identity(
        "relu'",
        sp.diff(relu(z), z),
        sp.Piecewise((1, z > 0), (0, True)),
        "Activation function",
        "functional_nn.relu.derivative (relu'(0) = 0)",
    ),
    Identity(
        "identity'",
        sp.diff(z, z),
        sp.Integer(1),
        "Neural network for regression",
        "functional_nn.identity.derivative",
    ),  # fmt: skip
]
"""Every activation identity, each proved by :func:`prove`."""

DERIVATIVES = {
    "sigmoid": sp.diff(_sigma, z),
    "tanh": sp.diff(sp.tanh(z), z),
    "relu": sp.diff(relu(z), z),
    "identity": sp.diff(z, z),
}
"""The derivatives as SymPy derived them, for numeric comparison with the library's."""
