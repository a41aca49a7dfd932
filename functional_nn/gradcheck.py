"""``check_gradients`` and its table of bars.

This path is kept for code that imports it (the README documented it); the code lives in
:mod:`functional_nn.checking`.
"""

from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    GradientMismatch,
    LeafComparison,
    compare_gradients,
)
from functional_nn.checking._network_check import (
    check_gradients,
    default_methods,
    directional_derivatives,
    random_directions,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE, TOLERANCES
from functional_nn.differences._network_methods import complex_step

__all__ = [
    "CheckRow",
    "DIRECTIONAL_ABOVE",
    "GradCheckReport",
    "GradientMismatch",
    "LeafComparison",
    "TOLERANCES",
    "check_gradients",
    "compare_gradients",
    "complex_step",
    "default_methods",
    "directional_derivatives",
    "random_directions",
]
