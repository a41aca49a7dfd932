"""functional_nn: the lecture "Neural networks and deep learning" as pure JAX functions.

Networks are a frozen :class:`Network` (static under :func:`jax.jit`) and a tuple of
:class:`Layer` parameters; every gradient method has the signature
``method(net, loss, params, x, y) -> (J, grads)``. Importing the library changes no JAX
configuration and imports neither sympy nor any plotting or CLI library.

Every public name is here, as ``fnn.NAME``; each lives in the subpackage of its idea:
``lecture`` (the model and its hand-written gradients), ``differences`` (finite differences),
``checking`` (the checker), ``program`` (reading a function's program: ``promote``),
``training`` and ``data``; ``_compile`` and ``_util`` serve them, and the few of their names
that users call are here too: the device meshes (``data_mesh``, ``sample_sharding``,
``replicated``, ``shard_batch``) and the compile settings (``use_persistent_cache``,
``prefer_fast_compilation``, ``enable_executable_cache``, ``supported_xla_flags``,
``supported_compile_options``). The module paths of release 0.1 that held them
(``functional_nn.parallel``, ``.compilation_cache``, ``.executable_cache``, ``.gradcheck``,
``.xla_options``) still import, with a ``DeprecationWarning`` (``_util/_moved.py``).
"""

from functional_nn._compile import (
    enable_executable_cache,
    prefer_fast_compilation,
    supported_compile_options,
    supported_xla_flags,
    use_persistent_cache,
)
from functional_nn._util import (
    MOVED_PATHS,
    data_mesh,
    moved_module,
    replicated,
    sample_sharding,
    serve_moved_paths,
    shard_batch,
)
from functional_nn.checking import (
    DIRECTIONAL_ABOVE,
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
    directional_derivatives,
    locate,
    random_directions,
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

__version__ = "0.2.0"

__all__ = [
    "DIRECTIONAL_ABOVE",
    "data_mesh",
    "directional_derivatives",
    "enable_executable_cache",
    "prefer_fast_compilation",
    "random_directions",
    "replicated",
    "sample_sharding",
    "shard_batch",
    "supported_compile_options",
    "supported_xla_flags",
    "use_persistent_cache",
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
"""Public names that live with SymPy in ``derivations/`` (importing ``functional_nn`` imports
no SymPy: docs/layout.md); ``fnn.NAME`` imports their module on first use."""

serve_moved_paths()


def __getattr__(name: str):
    import importlib

    if name in _WITH_SYMPY:
        return getattr(importlib.import_module(_WITH_SYMPY[name]), name)
    if f"functional_nn.{name}" in MOVED_PATHS:  # fnn.gradcheck: the old path, with its warning
        return moved_module(f"functional_nn.{name}")
    raise AttributeError(f"module 'functional_nn' has no attribute {name!r}")
