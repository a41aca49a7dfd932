"""functional_nn: the lecture "Neural networks and deep learning" as pure JAX functions.

Networks are a frozen :class:`Network` (static under :func:`jax.jit`) and a tuple of
:class:`Layer` parameters; every gradient method has the signature
``method(net, loss, params, x, y) -> (J, grads)``. Importing the library changes no JAX
configuration and imports neither sympy nor any plotting or CLI library.

Every public name is here, as ``fnn.NAME``; each lives in the subpackage of its idea:
``lecture`` (the model and its hand-written gradients), ``differences`` (finite differences),
``checking`` (the checker), ``program`` (reading a function's program: ``promote``),
``training`` and ``data``; ``_compile`` and ``_util`` serve them.
"""

from functional_nn.checking import (
    TOLERANCES,
    CheckRow,
    Culprit,
    GradCheckReport,
    GradientMismatch,
    LeafComparison,
    LocateReport,
    Progress,
    TaylorLadder,
    check_grad,
    check_gradients,
    check_jvp,
    check_vjp,
    compare_gradients,
    default_methods,
    locate,
)
from functional_nn.data import DATASETS, Dataset, load, load_dataset, save
from functional_nn.differences import (
    EpsStudy,
    FiniteDifferenceResult,
    complex_step,
    default_eps,
    eps_study,
    finite_difference_grad,
    finite_difference_jacobian,
    finite_differences,
    local_finite_differences,
    observed_order,
)
from functional_nn.lecture import (
    ACTIVATIONS,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    Activation,
    JacobianFactors,
    Layer,
    LayerFactors,
    Loss,
    Network,
    Params,
    Trace,
    autodiff,
    backprop,
    bce,
    cross_entropy,
    equivalent_linear_map,
    factor_table,
    get_activation,
    get_loss,
    identity,
    jacobian_chain,
    jacobian_factors,
    mse,
    num_params,
    objective,
    relu,
    sigmoid,
    softmax,
    softplus,
    tanh,
)
from functional_nn.program import CannotPromote, promote
from functional_nn.training import History, fit, gradient_descent, weight_penalty

__version__ = "0.1.0"

__all__ = [
    "symbolic",
    "check_symbolic",
    "CannotPromote",
    "Culprit",
    "LocateReport",
    "locate",
    "promote",
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
    "Progress",
    "TaylorLadder",
    "Trace",
    "autodiff",
    "backprop",
    "bce",
    "check_grad",
    "check_gradients",
    "check_jvp",
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


_WITH_SYMPY = {"symbolic": "derivations.closed_form", "check_symbolic": "derivations.ulp_accuracy"}
"""Public names that live with SymPy in ``derivations/`` (DESIGN: importing ``functional_nn``
imports no SymPy); ``fnn.NAME`` imports their module on first use."""


def __getattr__(name: str):
    if name in _WITH_SYMPY:
        import importlib

        return getattr(importlib.import_module(_WITH_SYMPY[name]), name)
    raise AttributeError(f"module 'functional_nn' has no attribute {name!r}")
