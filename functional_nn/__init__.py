"""functional_nn: the lecture "Neural networks and deep learning" as pure JAX functions.

Networks are a frozen :class:`Network` (static under :func:`jax.jit`) and a tuple of
:class:`Layer` parameters; every gradient method has the signature
``method(net, loss, params, x, y) -> (J, grads)``. Importing the library changes no JAX
configuration and imports neither sympy nor any plotting or CLI library.
"""

from functional_nn.activations import (
    ACTIVATIONS,
    Activation,
    get_activation,
    identity,
    relu,
    sigmoid,
    tanh,
)
from functional_nn.backprop import (
    JacobianFactors,
    LayerFactors,
    autodiff,
    backprop,
    factor_table,
    jacobian_chain,
    jacobian_factors,
    objective,
)
from functional_nn.gradcheck import LeafComparison, compare_gradients
from functional_nn.losses import LOSSES, Loss, bce, get_loss, mse, softplus
from functional_nn.network import Layer, Network, Params, Trace, equivalent_linear_map, num_params

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "Activation",
    "JacobianFactors",
    "Layer",
    "LayerFactors",
    "LeafComparison",
    "Loss",
    "Network",
    "Params",
    "Trace",
    "autodiff",
    "backprop",
    "bce",
    "compare_gradients",
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
    "softplus",
    "tanh",
]
