"""The lecture's model as code: activations, losses, the network, the objective J and its
gradient by the delta rule and by the chain of per-layer Jacobian factors.

- ``_activations.py``: sigmoid, ReLU, tanh, identity, softmax, each with its derivative.
- ``_losses.py``: BCE, MSE, cross-entropy: per-sample value and dJ/dy_hat, fused forms.
- ``_network.py``: ``Network`` (frozen, static under jit), ``Layer(W, b)``, init, trace, apply.
- ``_cost.py``: J, the argument checks every gradient method shares, ``autodiff``.
- ``_gradients.py``: ``backprop`` (the delta rule), ``jacobian_factors`` and ``jacobian_chain``.

Imports only ``_compile`` (one compiled program per call) and ``_util`` (argument checks).
"""

from functional_nn.lecture._activations import (
    ACTIVATIONS,
    OUTPUT_ACTIVATIONS,
    Activation,
    get_activation,
    identity,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from functional_nn.lecture._cost import autodiff, objective
from functional_nn.lecture._gradients import (
    JacobianFactors,
    LayerFactors,
    backprop,
    factor_table,
    jacobian_chain,
    jacobian_factors,
)
from functional_nn.lecture._losses import LOSSES, Loss, bce, cross_entropy, get_loss, mse, softplus
from functional_nn.lecture._network import (
    Layer,
    Network,
    Params,
    Trace,
    equivalent_linear_map,
    num_params,
)

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "JacobianFactors",
    "LOSSES",
    "Layer",
    "LayerFactors",
    "Loss",
    "Network",
    "OUTPUT_ACTIVATIONS",
    "Params",
    "Trace",
    "autodiff",
    "backprop",
    "bce",
    "cross_entropy",
    "equivalent_linear_map",
    "factor_table",
    "get_activation",
    "get_loss",
    "identity",
    "jacobian_chain",
    "jacobian_factors",
    "mse",
    "num_params",
    "objective",
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "tanh",
]
