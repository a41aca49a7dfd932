"""The checkers in a user's test suite: Hypothesis strategies for parameter pytrees, and a
pytest plugin that prints a failing check's table.

- ``_strategies.py``: :func:`params_trees` (nested dicts, tuples and lists of arrays; float32,
  float64, bfloat16, float16, complex64, complex128 leaves; held leaves such as PRNG keys and
  step counters; Equinox modules where Equinox is installed) and :func:`array_leaves`.
- The pytest plugin is not here: it is the module ``pytest_functional_nn`` beside the package
  (entry point ``pytest11``, loaded by every pytest in an environment that installs
  ``functional_nn``; importing anything in this package would import the library and
  Hypothesis). When a test fails, each failing :class:`~functional_nn.GradCheckReport` or
  :class:`~functional_nn.LocateReport` that the failing frames hold is printed as its table
  in a section of pytest's report.

Needs Hypothesis (``pip install "functional_nn[testing]"``); ``import functional_nn`` never
imports this package, and this package imports nothing else of the library.
"""

from functional_nn.testing._strategies import HELD_KINDS, array_leaves, params_trees

__all__ = ["HELD_KINDS", "array_leaves", "params_trees"]
