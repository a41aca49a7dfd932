r"""How the error of finite differences depends on the step: the V-shaped curve.

For a step :math:`h`, a difference quotient has a truncation error that falls with :math:`h`
(:math:`O(h)` forward, :math:`O(h^2)` central and complex step) and a rounding error that
grows as :math:`u/h` (:math:`u` the machine epsilon), except for the complex step, which
subtracts nothing. On a log-log plot of error against :math:`h` the two make a V; the slope
of its right arm is the observed order of accuracy. :func:`eps_study` measures the error of
each scheme against ``autodiff`` over a log grid of relative steps and estimates that slope.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import highest_precision
from functional_nn._util._validation import check_real
from functional_nn.differences._engine import finite_difference_grad
from functional_nn.differences._steps import SCHEMES
from functional_nn.lecture._cost import autodiff, objective


class EpsStudy(NamedTuple):
    """Errors of finite differences over a grid of steps.

    Attributes:
        eps: the relative steps, ascending.
        errors: scheme -> worst normwise leaf error against ``autodiff`` at each step.
        orders: scheme -> observed order of accuracy (slope of the truncation arm), ``nan``
            where the grid holds too few points of it.
    """

    eps: np.ndarray
    errors: dict[str, np.ndarray]
    orders: dict[str, float]


def observed_order(eps, errors, floor_factor: float = 100.0, ceiling: float = 1e-1) -> float:
    """The slope of log(error) against log(eps) where truncation dominates.

    Those are the steps above the best one whose error stands at least ``floor_factor``
    above the smallest error (so rounding is negligible) and below ``ceiling`` (so the
    expansion in ``eps`` still holds). ``nan`` with fewer than two such points.
    """
    keep = order_points(eps, errors, floor_factor, ceiling)
    if keep.sum() < 2:
        return float("nan")
    eps, errors = np.asarray(eps, float), np.asarray(errors, float)
    slope, _ = np.polyfit(np.log10(eps[keep]), np.log10(errors[keep]), 1)
    return float(slope)


def order_points(eps, errors, floor_factor: float = 100.0, ceiling: float = 1e-1) -> np.ndarray:
    """The mask of the points :func:`observed_order` fits its slope to."""
    eps, errors = np.asarray(eps, float), np.asarray(errors, float)
    best = int(np.nanargmin(errors))
    return (
        (np.arange(eps.size) > best)
        & (errors > floor_factor * errors[best])
        & (errors < ceiling)
        & (errors > 0)
    )


@highest_precision
def eps_study(
    net,
    loss,
    params,
    x,
    y,
    schemes=("forward", "central", "complex_step"),
    eps=None,
    reduction: str = "sum",
) -> EpsStudy:
    """Measure each scheme's error against ``autodiff`` over a log grid of steps.

    Args:
        net, loss, params, x, y, reduction: the problem (float64 parameters for a V with
            both arms).
        schemes: the finite-difference schemes to measure.
        eps: the relative steps; default ``logspace(-16, -1, 31)``.

    Returns:
        :class:`EpsStudy`, errors normwise (the worst leaf) at each step.

    Its programs run with the highest matmul precision, whatever the process default.
    """
    schemes = _check_schemes(schemes)
    eps = np.logspace(-16, -1, 31) if eps is None else _check_grid(eps)
    _, ref = autodiff(net, loss, params, x, y, reduction)
    J = objective(net, loss, reduction)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    ref_leaves = jax.tree_util.tree_leaves(ref)
    scale = [jnp.max(jnp.abs(r)) for r in ref_leaves]

    def error(grads):
        leaves = jax.tree_util.tree_leaves(grads)
        errs = [
            jnp.max(jnp.abs(g - r)) / jnp.where(s > 0, s, 1)
            for g, r, s in zip(leaves, ref_leaves, scale, strict=True)
        ]
        return jnp.max(jnp.stack(errs))

    errors, orders = {}, {}
    for scheme in schemes:

        def one(e, x, y, scheme=scheme):
            return error(finite_difference_grad(lambda p: J(p, x, y), params, scheme, e))

        study = jax.jit(jax.vmap(one, in_axes=(0, None, None)))  # x, y arguments, not constants
        errors[scheme] = np.asarray(study(jnp.asarray(eps, dtype), x, y))
        orders[scheme] = observed_order(eps, errors[scheme])
    return EpsStudy(eps, errors, orders)


def _check_schemes(schemes) -> tuple[str, ...]:
    """``schemes`` as a tuple of known names: a non-empty sequence, not one string."""
    where = "eps_study"
    if isinstance(schemes, (str, bytes)) or not isinstance(schemes, (list, tuple)):
        raise TypeError(
            f"{where}: schemes must be a non-empty list or tuple of scheme names from "
            f"{SCHEMES}, such as ('central',); got {schemes!r:.60} ({type(schemes).__name__})"
        )
    if not schemes:
        raise ValueError(f"{where}: schemes is empty: nothing to study; expected some of {SCHEMES}")
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise ValueError(f"{where}: unknown scheme {scheme!r} in schemes; expected {SCHEMES}")
    return tuple(schemes)


def _check_grid(eps) -> np.ndarray:
    """``eps`` as an ascending float64 grid: a non-empty 1-d sequence or array of real
    numbers in (0, 1), no bools."""
    where = "eps_study"
    rule = f"{where}: eps must be a non-empty list or 1-d array of real numbers in (0, 1)"
    if isinstance(eps, (list, tuple)):
        values = [check_real(e, f"eps[{i}]", where, 0.0, 1.0) for i, e in enumerate(eps)]
        grid = np.asarray(values, np.float64)
    elif isinstance(eps, (jax.Array, np.ndarray)):
        dtype = np.asarray(eps).dtype if isinstance(eps, np.ndarray) else eps.dtype
        if (
            eps.ndim != 1
            or not np.issubdtype(dtype, np.number)
            or np.issubdtype(dtype, np.complexfloating)
        ):
            raise TypeError(f"{rule}; got an array of dtype {dtype} and shape {eps.shape}")
        grid = np.asarray(eps, np.float64)
        bad = ~((grid > 0) & (grid < 1))  # nan and inf included
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{rule}; eps[{i}] is {float(grid[i])!r}")
    else:
        raise TypeError(f"{rule}, such as [1e-6, 1e-4]; got {eps!r:.60} ({type(eps).__name__})")
    if grid.size == 0:
        raise ValueError(f"{rule}; got an empty grid")
    return np.sort(grid)
