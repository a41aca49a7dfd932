r"""The linear collapse (slide "Activation function", without activations):

.. math::

    \hat y = W^{(L+1)} \cdots W^{(1)} x + b_{eq} = W_{eq} x + b_{eq}

shown symbolically for a network with identity activations, and with biases, the matching
:math:`b_{eq} = \sum_l W^{(L+1)} \cdots W^{(l+1)} b^{(l)}` that
:func:`functional_nn.equivalent_linear_map` computes.
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from derivations.networks import symbolic_network

__all__ = ["Collapse", "collapse"]


class Collapse(NamedTuple):
    y_hat: sp.Matrix  # the network, layer by layer
    W_eq: sp.Matrix
    b_eq: sp.Matrix
    holds: bool


def collapse(sizes=(3, 4, 3, 2), bias: bool = True) -> Collapse:
    """Write an identity network out and compare it with ``W_eq x + b_eq``."""
    net = symbolic_network(sizes, "identity", "identity", bias, "mse", factors=False)
    W_eq = sp.eye(sizes[0])
    b_eq = sp.zeros(sizes[0], 1)
    for l in range(1, len(sizes)):
        W_eq = net.W[l] * W_eq
        b_eq = net.W[l] * b_eq + (net.b[l] if bias else sp.zeros(sizes[l], 1))
    y_hat = net.h[-1]
    holds = (y_hat - (W_eq * net.x + b_eq)).applyfunc(sp.expand) == sp.zeros(sizes[-1], 1)
    return Collapse(y_hat, W_eq, b_eq, holds)
