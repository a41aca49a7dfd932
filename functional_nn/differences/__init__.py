"""Finite differences: steps and schemes, the complex step, ``finite_difference_grad`` and
``_jacobian`` of any function, the network gradient methods built on them, and the step study.

- ``_flat.py``: the parameter pytree as one vector.
- ``_estimates.py``: the one place that turns evaluations into estimates with their error
  bars (the step rule, central, Richardson and Ridders, the complex step) and the one rule
  that validates the complex step; over NumPy or ``jax.numpy``, shared by every path below.
- ``_blocks.py``: ``f`` with one leaf moved, evaluated in memory-sized chunks (the checkers'
  evaluations).
- ``_steps.py``: schemes, step sizes from the scheme and dtype, argument checks.
- ``_complex.py``: where the complex step applies, and whether it agrees with central
  differences (traced, by ``_estimates``' rule).
- ``_engine.py``: ``finite_difference_grad`` / ``_jacobian``: the vectorized differences.
- ``_network_methods.py``: ``finite_differences``, ``complex_step`` and
  ``local_finite_differences`` as gradient methods of a network.
- ``_eps.py``: ``eps_study`` and ``observed_order``.

Imports ``lecture`` (the objective the network methods difference), ``_compile`` and ``_util``.
"""

from functional_nn.differences._engine import (
    FiniteDifferenceResult,
    finite_difference_grad,
    finite_difference_jacobian,
)
from functional_nn.differences._eps import EpsStudy, eps_study, observed_order
from functional_nn.differences._network_methods import (
    complex_step,
    finite_differences,
    local_finite_differences,
)
from functional_nn.differences._steps import default_eps

__all__ = [
    "EpsStudy",
    "FiniteDifferenceResult",
    "complex_step",
    "default_eps",
    "eps_study",
    "finite_difference_grad",
    "finite_difference_jacobian",
    "finite_differences",
    "local_finite_differences",
    "observed_order",
]
