"""The checker: per-leaf comparison and its report, the references, one tolerance table, the
directions, and the front doors ``check_gradients`` (a network's gradient methods),
``check_grad`` (any scalar function), ``check_vjp`` and ``check_jvp`` (any function's VJP and
JVP), and ``locate``.

- ``_comparison.py``: per-leaf errors, ``CheckRow``, ``GradCheckReport`` and ``TaylorLadder``.
- ``_taylor_plot.py``: ``GradCheckReport.plot`` (matplotlib, imported when called).
- ``_tolerances.py``: ``TOLERANCES``, the one table of bars, and ``DIRECTIONAL_ABOVE``.
- ``_directions.py``: random directions that are blocks of one leaf, drawn on the host.
- ``_progress.py``: ``Progress``, what a long check tells its ``callback``.
- ``_leaves.py``: what the front doors share about the trees they check.
- ``_complex_leaves.py``: complex leaves and outputs checked as real pairs (JAX's conventions).
- ``_opening.py``: what the function checkers do before they compare: held leaves, finite
  values, one trace, complex leaves as real pairs, ``k`` and the budget.
- ``_references.py``: the engine's references, leaf by leaf, and what they are made of
  (``Directions``, ``Reference``, ``Ladder``): a derivative along directions of one leaf
  (autodiff of a custom rule's primal, the validated complex step, central differences with
  Richardson), the shared ladder, when central differences resolve a leaf, and the name a
  report gives a reference.
- ``_locator.py``: ``locate``, which rule inside a program makes its gradient wrong;
  ``_on_failure.py``: ``locating``, which makes every failing front door name it.
- ``_programs.py``: ``check_gradients``' compiled method programs.
- ``_network_check.py``, ``_scalar_check.py``, ``_vjp_check.py``, ``_jvp_check.py``: the four
  front doors, which import the engine and never each other.

Imports ``differences``, ``lecture``, ``_compile`` and ``_util``.
"""

from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    GradientMismatch,
    LeafComparison,
    TaylorLadder,
    compare_gradients,
)
from functional_nn.checking._jvp_check import check_jvp
from functional_nn.checking._locator import Culprit, LocateReport, locate
from functional_nn.checking._network_check import (
    check_gradients,
    default_methods,
    directional_derivatives,
    random_directions,
)
from functional_nn.checking._progress import Progress
from functional_nn.checking._scalar_check import check_grad
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE, TOLERANCES
from functional_nn.checking._vjp_check import check_vjp

__all__ = [
    "CheckRow",
    "Culprit",
    "DIRECTIONAL_ABOVE",
    "GradCheckReport",
    "GradientMismatch",
    "LeafComparison",
    "LocateReport",
    "Progress",
    "TOLERANCES",
    "TaylorLadder",
    "check_grad",
    "check_gradients",
    "check_jvp",
    "check_vjp",
    "compare_gradients",
    "default_methods",
    "directional_derivatives",
    "locate",
    "random_directions",
]
