"""Every name the benchmark takes from a ``functional_nn`` submodule, imported here once.

The sections import these names from this module (``import functional_nn as fnn`` gives them the
rest), so a move of a library module changes only the import lines below.
"""

from functional_nn import (
    data_mesh,
    directional_derivatives,
    prefer_fast_compilation,
    random_directions,
    supported_compile_options,
    supported_xla_flags,
)
from functional_nn._compile import FAST_COMPILE, FAST_XLA_FLAGS, fast_compile_options, inline_jits
from functional_nn.differences._flat import ravel_params
from functional_nn.differences._steps import step_sizes

__all__ = [
    "FAST_COMPILE",
    "FAST_XLA_FLAGS",
    "fast_compile_options",
    "inline_jits",
    "supported_compile_options",
    "supported_xla_flags",
    "data_mesh",
    "directional_derivatives",
    "prefer_fast_compilation",
    "random_directions",
    "ravel_params",
    "step_sizes",
]
