r"""The vector chain rule (slide "Chain rule of derivatives, vector version"):

.. math::

    \underbrace{\frac{\partial z}{\partial x}}_{N \times L} =
    \underbrace{\frac{\partial z}{\partial y}}_{N \times M} \cdot
    \underbrace{\frac{\partial y}{\partial x}}_{M \times L}

for generic (undefined) functions :math:`f: \mathbb R^L \to \mathbb R^M` and
:math:`g: \mathbb R^M \to \mathbb R^N`, shown for small concrete sizes.
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp

__all__ = ["ChainRule", "chain_rule"]


class ChainRule(NamedTuple):
    """The two sides of the vector chain rule and their shapes."""

    lhs: sp.Matrix  # Jacobian of g(f(x)), derived directly
    dz_dy: sp.Matrix  # Jacobian of g, at y = f(x)
    dy_dx: sp.Matrix  # Jacobian of f
    holds: bool


def chain_rule(L: int = 2, M: int = 3, N: int = 2) -> ChainRule:
    """Derive both sides for generic f and g of the given sizes and compare them."""
    x = sp.symbols(f"x_1:{L + 1}", real=True)
    y = sp.symbols(f"y_1:{M + 1}", real=True)
    f = sp.Matrix([sp.Function(f"f_{m + 1}")(*x) for m in range(M)])
    g = sp.Matrix([sp.Function(f"g_{n + 1}")(*y) for n in range(N)])
    at = dict(zip(y, f, strict=True))
    lhs = g.subs(at, simultaneous=True).jacobian(x)  # (N, L)
    dz_dy = g.jacobian(y).subs(at, simultaneous=True)  # (N, M)
    dy_dx = f.jacobian(x)  # (M, L)
    difference = (lhs - dz_dy * dy_dx).applyfunc(lambda e: sp.simplify(e.doit()))
    return ChainRule(lhs, dz_dy, dy_dx, difference == sp.zeros(N, L))
