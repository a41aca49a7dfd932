r"""Losses (slides "Training a deep neural net", "Gradient of W(2)"): BCE and MSE, their
derivatives, the fused BCE on logits, and the conventions other libraries use.

- BCE on probabilities: :math:`J = -(y \log \hat y + (1-y)\log(1-\hat y))`,
  :math:`\partial J/\partial \hat y = (\hat y - y) / (\hat y (1 - \hat y))`.
- BCE composed with the sigmoid, derived with respect to the logit:
  :math:`\partial J/\partial z = \sigma(z) - y`.
- BCE on logits: :math:`\mathrm{softplus}(z) - y z`, equal to the composed form.
- The lecture's MSE :math:`\lVert \hat y - y \rVert^2`, gradient :math:`2(\hat y - y)`; the
  mean over N samples divides it by N; the "half MSE" of other libraries,
  :math:`\tfrac12 \lVert \hat y - y \rVert^2`, has gradient :math:`\hat y - y`: a factor 2
  from the lecture's.
"""

from __future__ import annotations

import sympy as sp

from derivations.activations import Identity
from derivations.symbols import sigmoid, softplus

__all__ = ["IDENTITIES", "y", "y_hat", "z"]

y_hat = sp.Symbol("hat{y}", positive=True)
y = sp.Symbol("y", real=True)
z = sp.Symbol("z", real=True)

_bce = -(y * sp.log(y_hat) + (1 - y) * sp.log(1 - y_hat))
_sigma = 1 / (1 + sp.exp(-z))
_bce_of_sigmoid = _bce.subs(y_hat, _sigma)
_mse = (y_hat - y) ** 2
_y_hats = sp.symbols("hat{y}_1:4", positive=True)
_ys = sp.symbols("y_1:4", real=True)
_sum_of_squares = sum((a - b) ** 2 for a, b in zip(_y_hats, _ys, strict=True))

BCE = _bce
"""BCE on probabilities."""

IDENTITIES = [
    Identity(
        "BCE'",
        sp.diff(_bce, y_hat),
        (y_hat - y) / (y_hat * (1 - y_hat)),
        "Training a deep neural net",
        "functional_nn.bce.grad",
    ),
    Identity(
        "d BCE(sigmoid(z)) / dz",
        sp.diff(_bce_of_sigmoid, z),
        _sigma - y,
        "Gradient of W(2)",
        "functional_nn.bce.logits_grad",
    ),
    Identity(
        "BCE on logits",
        _bce_of_sigmoid,
        (softplus(z) - y * z).rewrite(sp.exp),
        "Training a deep neural net",
        "functional_nn.bce.logits_value",
    ),
    Identity(
        "softplus' = sigmoid",
        sp.diff(sp.log(1 + sp.exp(z)), z),
        sigmoid(z).rewrite(sp.exp),
        "Training a deep neural net",
        "derivations.symbols.softplus (its derivative rule)",
    ),
    Identity(
        "MSE'",
        sp.diff(_mse, y_hat),
        2 * (y_hat - y),
        "Gradient of W(2)",
        "functional_nn.mse.grad (the lecture's 2 (y_hat - y))",
    ),
    Identity(
        "half-MSE'",
        sp.diff(_mse / 2, y_hat),
        y_hat - y,
        "Gradient of W(2)",
        "other libraries' convention: half the lecture's gradient",
    ),
    Identity(
        "mean reduction (N = 3)",
        sp.diff(_sum_of_squares / 3, _y_hats[0]),
        sp.diff(_sum_of_squares, _y_hats[0]) / 3,
        "Training a deep neural net",
        "objective(reduction='mean'): every gradient divided by N",
    ),
]
"""Every loss identity, each proved by :func:`derivations.activations.prove`."""

DERIVATIVES = {
    "bce": sp.simplify(sp.diff(_bce, y_hat)),
    "bce_logits": sp.simplify(sp.diff(_bce_of_sigmoid, z)),
    "mse": sp.simplify(sp.diff(_mse, y_hat)),
}
"""The derivatives as SymPy derived and simplified them (functions of ``y_hat, y`` or
``z, y``), for numeric comparison with the library. Simplified, because the raw derivative of
BCE(sigmoid(z)) holds ``1 - 1/(1 + e^{-z})``, which cancels in floating point: the comparison
is of closed forms, not of that cancellation."""
