r"""Finite-difference schemes: their steps, their costs, and the checks of their arguments.

For a relative step :math:`\epsilon`, the step of entry :math:`i` is
:math:`h_i = \epsilon \max(1, |\theta_i|)`, rounded so that :math:`\theta_i \pm h_i` is
exact; the default :math:`\epsilon` is chosen from the scheme and the dtype's machine epsilon
:math:`u`: :math:`\sqrt u` (forward), :math:`u^{1/3}` (central), :math:`u` (complex step).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from functional_nn._util._validation import check_int, check_real, is_concrete
from functional_nn.differences._complex import CROSS_CHECKS
from functional_nn.differences._estimates import step_scale
from functional_nn.differences._flat import check_float_dtype

SCHEMES = ("forward", "central", "complex_step")
DEFAULT_CHUNK_SIZE = 32
"""Directions per vmapped chunk: the fastest at P = 1e3 and 1e4 (benchmark.py)."""


def default_eps(scheme: str, dtype) -> float:
    r"""The default relative step: :math:`\sqrt u` (forward), :math:`u^{1/3}` (central),
    :math:`u` (complex step), for the machine epsilon :math:`u` of ``dtype``.

    >>> f"{default_eps('forward', 'float64'):.1e}", f"{default_eps('central', 'float32'):.1e}"
    ('1.5e-08', '4.9e-03')
    """
    _check_scheme(scheme, "default_eps")
    u = float(jnp.finfo(check_float_dtype(dtype, "default_eps")).eps)
    return {"forward": math.sqrt(u), "central": u ** (1 / 3), "complex_step": u}[scheme]


def evaluations(scheme: str, P: int) -> int:
    """Evaluations of ``f`` a global estimate makes: ``P + 1``, ``2P`` or ``P + 4`` (the
    complex step and its cross-check,
    :func:`~functional_nn.differences._complex.complex_step_agrees`): the points at which
    the compiled estimate evaluates ``f``, each one run of its computation
    (``tests/differences/test_finite_differences.py`` counts them with an ``io_callback``).
    """
    _check_scheme(scheme, "evaluations")
    return {"forward": P + 1, "central": 2 * P, "complex_step": P + CROSS_CHECKS}[scheme]


def _check_scheme(scheme, where):
    if scheme not in SCHEMES:
        raise ValueError(f"{where}: unknown scheme {scheme!r}; expected one of {SCHEMES}")


def check_step_args(scheme, eps, chunk_size, where: str):
    """Check a scheme, a relative step and a chunk size; return ``(eps, chunk_size)``.

    ``eps`` is ``None`` (the default step) or a real number in (0, 1): Python, NumPy and JAX
    scalars are welcome, bools are not. A traced ``eps`` (an eps study vmapped over a grid) is
    the caller's to check. ``chunk_size`` is ``None`` or an int >= 1.
    """
    _check_scheme(scheme, where)
    if eps is not None and is_concrete(eps):
        eps = check_real(eps, "eps", where, 0.0, 1.0)
    if chunk_size is not None:
        chunk_size = check_int(chunk_size, "chunk_size", where)
    return eps, chunk_size


def check_eps_for_dtype(scheme: str, eps, dtype, where: str) -> None:
    r"""Refuse a concrete ``eps`` too small for ``dtype``, where every step would be lost.

    Forward and central differences need :math:`\theta_i + h_i \ne \theta_i`: an ``eps``
    below the machine epsilon :math:`u` rounds the step to 0 (or to a few ulps of
    :math:`\theta_i`) and the quotient is ``nan`` or noise. The complex step subtracts
    nothing but needs :math:`h` representable: an ``eps`` below :math:`\sqrt{\text{tiny}}`
    underflows :math:`h` or the imaginary part :math:`h f'` it carries. A traced ``eps`` (an
    eps study) passes.

    >>> try:
    ...     check_eps_for_dtype("central", 1e-9, "float32", "finite_difference_grad")
    ... except ValueError as e:
    ...     print(str(e)[:70])
    finite_difference_grad: eps=1e-09 is below the machine epsilon of floa
    """
    if eps is None or not is_concrete(eps):
        return
    dtype = check_float_dtype(dtype, where)
    info = jnp.finfo(dtype)
    eps = float(eps)
    if scheme == "complex_step":
        floor = math.sqrt(float(info.tiny))
        if eps < floor:
            raise ValueError(
                f"{where}: eps={eps!r} is too small for the complex step in {dtype.name}: the "
                f"step h (and the imaginary part h f' it carries) underflows below "
                f"sqrt(tiny) = {floor:.1e}; use eps >= {floor:.1e} (default "
                f"{default_eps(scheme, dtype):.1e})"
            )
    elif eps < float(info.eps):
        raise ValueError(
            f"{where}: eps={eps!r} is below the machine epsilon of {dtype.name} "
            f"({float(info.eps):.1e}): the step (theta + h) - theta rounds to 0 and every "
            f"{scheme} difference is nan or noise; use eps >= {float(info.eps):.1e} (default "
            f"{default_eps(scheme, dtype):.1e})"
        )


def step_sizes(theta: jax.Array, scheme: str, eps: float) -> jax.Array:
    """:math:`h_i = \\epsilon \\max(1, |\\theta_i|)`, rounded so that ``theta +- h`` is exact.

    >>> step_sizes(jnp.array([0.5, -4.0]), "central", 0.25).tolist()
    [0.25, 1.0]
    """
    h = eps * step_scale(jnp.abs(theta), jnp)
    if scheme == "complex_step":
        return h  # the imaginary part carries h exactly
    return (theta + h) - theta
