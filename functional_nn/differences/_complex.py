r"""The complex step, and when it can be trusted.

For a function that is complex-analytic near real :math:`\theta`,

.. math:: f'(\theta)\, v = \operatorname{Im} f(\theta + \mathrm{i}\, h v) / h + O(h^2),

with no subtraction, hence no cancellation: :math:`h = u` gives the derivative to machine
precision. It reads nonsense where ``f`` is not analytic, and not every such ``f`` says so:

- an error on complex input, or a real output (``real``, ``abs``, a comparison): refused by
  :func:`check_complex_input` (or :func:`complex_checked`, while it is traced);
- a complex output from a non-analytic function (``w * conj(w)``), or a JAX kernel that drops
  the imaginary part and returns complex zeros without error (with JAX 0.10.2 on CPU,
  ``jnp.logaddexp`` and ``jnp.convolve``): caught by :func:`complex_step_agrees`, a cross-check
  against central differences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from functional_nn.differences._estimates import central, complex_agrees, rounding_floor, step_scale

CROSS_CHECKS = 4
"""Evaluations the cross-check of :func:`complex_step_agrees` makes (2 directions, +-h)."""


def check_complex_input(g, theta: jax.Array, where: str) -> None:
    """Refuse a function that errors on complex input or returns a real output."""
    z = jax.ShapeDtypeStruct(theta.shape, jnp.result_type(theta, 1j))
    jax.eval_shape(complex_checked(g, where), z)


def complex_checked(g, where: str):
    """``g``, refusing (``ValueError``, when it is traced) complex input that it errors on or
    answers with a real output: the check of :func:`check_complex_input` made by the very
    call that evaluates ``g`` at complex points, with no trace of its own. Real input passes
    through unchecked."""

    def checked(z):
        if not jnp.iscomplexobj(z):
            return g(z)
        try:
            out = g(z)
        except Exception as error:
            if _fails_on_real(g, z):
                raise  # an error of f's own, whatever the input: as f raised it
            raise ValueError(
                f"{where}: scheme 'complex_step' needs f to accept complex parameters, but it "
                f"raised {type(error).__name__}: {error}; use scheme='central'"
            ) from None
        if not jnp.issubdtype(jnp.result_type(out), jnp.complexfloating):
            raise ValueError(
                f"{where}: scheme 'complex_step' needs f to stay complex-analytic, but f "
                f"returned {jnp.result_type(out)} for complex parameters (it takes a real part, "
                "abs or a comparison that drops the imaginary part); use scheme='central'"
            )
        return out

    return checked


def _fails_on_real(g, z) -> bool:
    """Whether ``g`` raises on the real part of ``z`` too (traced again only after an error)."""
    try:
        jax.eval_shape(g, jax.ShapeDtypeStruct(z.shape, jnp.finfo(z.dtype).dtype))
    except Exception:  # noqa: BLE001 -- any failure on real input is f's own
        return True
    return False


def complex_step_agrees(g, theta: jax.Array, columns: jax.Array, pattern=None) -> jax.Array:
    r"""Whether complex-step columns of ``g`` agree with central differences (a bool scalar).

    Two checks, four evaluations of ``g``: along one quasi-random direction :math:`v` (fixed)
    and along :math:`e_i` for the entry :math:`i` of largest magnitude, the predicted
    :math:`v^\top` ``columns`` against :math:`(g(\theta + h v) - g(\theta - h v)) / 2h`,
    by :func:`~functional_nn.differences._estimates.complex_agrees` (the checkers' rule): within
    the rounding floor :math:`16\, u \max|g| / h` plus 1e-2 (float32) or 1e-5 (float64)
    relative, the bar of the central difference's :math:`O(h^2)` truncation at
    :math:`h = u^{1/3} \max(1, \max|\theta|)`. A function that is not complex-analytic
    (``conj``, or a kernel that drops the imaginary part) fails it: its "derivative" is off
    by O(1). With a ``pattern`` (``theta -> bool array``), a direction whose central step
    changes it (a ReLU kink, where the complex step is right and central differences are
    not) is skipped.
    """
    if columns.shape[1] == 0:  # an empty output: nothing to disagree on
        return jnp.ones((), bool)
    dtype = theta.dtype
    u = float(jnp.finfo(dtype).eps)
    # a fixed quasi-random direction in [-1, 1] (golden-ratio sequence: no PRNG to compile)
    v = (2 * jnp.mod(0.5 + 0.6180339887498949 * jnp.arange(1, theta.size + 1), 1.0) - 1).astype(
        dtype
    )
    i = jnp.argmax(jnp.max(jnp.abs(columns), axis=1))
    directions = jnp.stack([v, jnp.zeros_like(theta).at[i].set(1)])  # (2, P)
    predicted = directions @ columns  # (2, m)
    h = u ** (1 / 3) * step_scale(jnp.max(jnp.abs(theta)), jnp)
    steps = jnp.concatenate([theta[None] + h * directions, theta[None] - h * directions])
    values = jax.vmap(lambda t: jnp.real(g(t)))(steps)  # one batch: one trace of g
    plus, minus = values[:2], values[2:]
    # the one validation of the complex step (the checkers' too): within the central
    # estimate's error, here its rounding floor, plus a relative bar for its O(h^2) truncation
    fmax = jnp.maximum(jnp.max(jnp.abs(plus)), jnp.max(jnp.abs(minus)))
    error = rounding_floor(fmax, h, u)
    rel = 1e-2 if dtype == jnp.float32 else 1e-5
    estimate = central(plus, minus, h)
    agrees = jnp.stack([complex_agrees(predicted[j], estimate[j], error, rel, jnp)
                        for j in range(2)])  # fmt: skip
    if pattern is not None:  # a difference across a kink refutes nothing: skip that direction
        changed = jnp.any(jax.vmap(pattern)(steps) != pattern(theta)[None], axis=1)  # (4,)
        agrees = agrees | changed[:2] | changed[2:]
    return jnp.all(agrees)
