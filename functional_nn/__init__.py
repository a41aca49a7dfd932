"""functional_nn: the lecture "Neural networks and deep learning" as pure JAX functions.

Networks are a frozen :class:`Network` (static under :func:`jax.jit`) and a tuple of
:class:`Layer` parameters; every gradient method has the signature
``method(net, loss, params, x, y) -> (J, grads)``. Importing the library changes no JAX
configuration and imports neither sympy nor any plotting or CLI library.
"""

from functional_nn.activations import (
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
from functional_nn.checkers import check_grad
from functional_nn.checkpoint import load, save
from functional_nn.comparison import (
    CheckRow,
    GradCheckReport,
    GradientMismatch,
    LeafComparison,
    compare_gradients,
)
from functional_nn.data import DATASETS, Dataset, load_dataset
from functional_nn.eps_study import EpsStudy, eps_study, observed_order
from functional_nn.finite_differences import (
    FiniteDifferenceResult,
    default_eps,
    finite_difference_grad,
    finite_difference_jacobian,
)
from functional_nn.gradcheck import TOLERANCES, check_gradients, default_methods
from functional_nn.losses import LOSSES, Loss, bce, cross_entropy, get_loss, mse, softplus
from functional_nn.network import Layer, Network, Params, Trace, equivalent_linear_map, num_params
from functional_nn.network_differences import (
    complex_step,
    finite_differences,
    local_finite_differences,
)
from functional_nn.train import History, fit, gradient_descent, weight_penalty
from functional_nn.vjp_checker import check_vjp

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "DATASETS",
    "LOSSES",
    "OUTPUT_ACTIVATIONS",
    "TOLERANCES",
    "Activation",
    "CheckRow",
    "Dataset",
    "EpsStudy",
    "FiniteDifferenceResult",
    "GradCheckReport",
    "GradientMismatch",
    "History",
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
    "check_grad",
    "check_gradients",
    "check_vjp",
    "compare_gradients",
    "complex_step",
    "cross_entropy",
    "default_eps",
    "default_methods",
    "eps_study",
    "equivalent_linear_map",
    "factor_table",
    "finite_difference_grad",
    "finite_difference_jacobian",
    "finite_differences",
    "fit",
    "get_activation",
    "get_loss",
    "gradient_descent",
    "identity",
    "jacobian_chain",
    "jacobian_factors",
    "load",
    "load_dataset",
    "local_finite_differences",
    "mse",
    "num_params",
    "objective",
    "observed_order",
    "relu",
    "save",
    "sigmoid",
    "softmax",
    "softplus",
    "tanh",
    "weight_penalty",
]
