r"""Logistic regression (slide "Logistic regression", "Training a deep neural net"): the
gradient of the summed BCE is

.. math:: \frac{\partial J}{\partial w} = \sum_n (\hat y_n - y_n)\, x_n,
          \qquad \hat y_n = \sigma(w^\top x_n),

proved for several concrete D and N, from the BCE on probabilities composed with the sigmoid.
"""

from __future__ import annotations

import sympy as sp

from derivations.symbols import sigmoid

__all__ = ["logistic_regression_gradient", "prove_logistic_regression"]


def logistic_regression_gradient(D: int, N: int):
    """``(derived, closed_form)``: dJ/dw by SymPy and ``sum_n (y_hat_n - y_n) x_n``."""
    w = sp.Matrix(sp.symbols(f"w_1:{D + 1}", real=True))
    X = sp.Matrix(N, D, lambda n, d: sp.Symbol(f"x_{{{n + 1},{d + 1}}}", real=True))
    y = sp.symbols(f"y_1:{N + 1}", real=True)
    y_hat = [sigmoid((X[n, :] * w)[0]) for n in range(N)]
    J = -sum(y[n] * sp.log(y_hat[n]) + (1 - y[n]) * sp.log(1 - y_hat[n]) for n in range(N))
    derived = sp.Matrix([sp.diff(J, wd) for wd in w])
    closed = sum(((y_hat[n] - y[n]) * X[n, :].T for n in range(N)), sp.zeros(D, 1))
    return derived, closed


def prove_logistic_regression(D: int, N: int) -> bool:
    """True when the derived gradient minus the closed form simplifies to 0."""
    derived, closed = logistic_regression_gradient(D, N)
    return all(sp.simplify(sp.together(a - b)) == 0 for a, b in zip(derived, closed, strict=True))
