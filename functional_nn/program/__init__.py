"""Reading ``f``'s program, its jaxpr: one interpreter over equations that descends into the
calls, loops, branches and custom rules, with the user's source line of each equation. It
knows jaxprs, not verdicts: the checkers above it use it.

- ``_reader.py``: tracing ``f`` to its program (held leaves kept out), the source line of an
  equation, the floating types a program computes in, what cannot be opened.
- ``_float64.py``: :func:`promote`, ``f`` with every floating type of its program raised to
  float64.
- ``_units.py``: the units ``locate`` checks (custom rules, ``stop_gradient``) and the values
  one eager run of the program gives them, inside calls, branches, loops and ``vmap``.

JAX internals this package relies on (an unknown primitive holding a sub-program is bound as
it is, and named among what could not be opened; ``tests/program/test_units_internals.py``
patches each of locate's away and sees a "not opened" row, not a wrong verdict):

- ``jax.extend.core`` (``Literal``, ``Jaxpr``, ``ClosedJaxpr``): the program's equations.
- the names of the primitives it opens, and the params it reads there: ``jit`` / ``pjit``
  (``jaxpr``), ``closed_call`` / ``core_call`` (``call_jaxpr``), ``remat2`` / ``checkpoint``
  (``jaxpr``, ``prevent_cse``, ``policy``), ``cond`` (``branches``), ``while``
  (``cond_jaxpr``, ``body_jaxpr``, ``cond_nconsts``, ``body_nconsts``), ``custom_jvp_call``
  and ``custom_vjp_call`` (``call_jaxpr``; ``bwd`` and ``jvp_jaxpr_fun`` / their
  ``debug_info.func_src_info`` for the names and lines ``locate`` reports; an equation with
  such a rule param under another name is a rule not read), ``scan`` (``jaxpr``,
  ``length``, ``reverse`` and either ``num_consts`` / ``num_carry`` (jax 0.6 to 0.12.0) or
  the flat trees ``ft_in`` / ``ft_out`` (jax 0.12.1), split by their own ``update`` /
  ``unpack``: ``locate`` runs its body), ``stop_gradient``; any other primitive with a
  jaxpr among its params (``reduce``, a scatter) is bound again with each such jaxpr raised;
  one with a function among its params is not opened.
- ``jax._src.source_info_util.user_frame``: the user's line of an equation, for messages
  (missing: "unknown line").
"""

from functional_nn.program._float64 import CannotPromote, promote
from functional_nn.program._reader import compute_dtypes, jaxpr_dtypes, source_line

__all__ = ["CannotPromote", "compute_dtypes", "jaxpr_dtypes", "promote", "source_line"]
