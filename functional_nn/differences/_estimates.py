r"""From evaluations to estimates: the one place that turns values of ``f`` into derivatives
with their own error bars, and the one rule that says when the complex step is trusted.

Every finite-difference path of the library uses these formulas: the traced
``finite_difference_grad`` / ``_jacobian`` and the leaf-by-leaf checkers alike. They are
written over an array module ``xp`` (NumPy on the host, ``jax.numpy`` when traced), so that
both paths run the same arithmetic.

- **The step rule.** A step along a direction :math:`v` of unit max-norm is
  :math:`h = \epsilon\, s`: along one entry :math:`s = \max(1, |\theta_i|)`
  (:func:`step_scale`), relative to the parameter's size, absolute near zero; along a dense
  direction of a whole leaf :math:`s = \max_i |\theta_{l,i}|` (:func:`leaf_scale`), the
  leaf's own size, 1 for a leaf of zeros.
- **Central differences** :math:`D(h) = (f(\theta + h v) - f(\theta - h v)) / 2h`, error
  :math:`c_2 h^2 + O(h^4)` plus rounding :math:`O(u \max|f| / h)`.
- **Richardson** on a ladder of steps :math:`h_0 > h_1 > \dots` (ratio
  :math:`r_j = h_{j-1}/h_j`): :math:`R_j = D(h_j) + (D(h_j) - D(h_{j-1})) / (r_j^2 - 1)`,
  error :math:`O(h^4)`. With two rungs the bar is :math:`|D(h_1) - D(h_0)|` (what the
  extrapolation removed, far above what it leaves); with four or more it is Ridders': the
  rung whose estimate agrees best with both neighbours, the disagreement as its bar, among
  the rungs where the ladder shows the :math:`h^2` law (the change of :math:`D` from rung to
  rung shrinks by half or more twice in a row, or sinks under rounding). A ladder that never
  shows it (``f`` varies faster than its smallest step resolves) gives an infinite bar: an
  estimate that agrees with its neighbours by chance is not trusted. Either way the rounding
  floor :math:`16\, u \max|f| / h` is added, so no estimate is trusted beyond what its
  evaluations can show.
- **The complex step** :math:`\operatorname{Im} f(\theta + \mathrm{i} h v) / h`, error
  :math:`O(h^2)` and no subtraction: :math:`h = u\, s`, bar :math:`16\, u |value|`.
- **Its validation** (:func:`complex_agrees`): the complex step along a direction against the
  central estimate along the same direction, *within the central estimate's own error bar*
  plus a relative bar. A validator can refute only what it resolves: where the central ladder
  cannot resolve the derivative (a fast-varying ``f`` in float32), it refutes nothing, and the
  complex step, exact where ``f`` is analytic, stands; where it does resolve it, a function
  that is not analytic (``conj``, a kernel that drops the imaginary part) is off by O(1) and
  is refused.
"""

from __future__ import annotations

import numpy as np

ROUNDING = 16
"""The rounding floor of a difference quotient is ``ROUNDING * u * max|f| / h``."""


def step_scale(abs_max, xp=np):
    r""":math:`s = \max(1, |\theta|)`: the scale of a step, for the largest magnitude of the
    entries a direction moves (the one step rule of every finite difference here)."""
    return xp.maximum(1, abs_max)


def leaf_scale(abs_max, xp=np):
    r""":math:`s_l = \max_i |\theta_{l,i}|`, or 1 for a leaf of zeros: the scale of a step along
    a dense direction of a whole leaf (the checkers' random directions).

    A whole leaf moves relative to its own size, not to 1: research models make ``f``
    invariant to the scale of what a layer norm normalizes, so ``f`` varies on the scale of
    the leaf (GPT-2's embeddings are :math:`0.02\, N(0, 1)`: a step of 0.04 moves them by
    twice their size, and the central difference of a right gradient was off by 100%). A leaf
    of zeros (a bias at its initial value) moves by absolute steps."""
    return xp.where(abs_max > 0, abs_max, 1)


def central(plus, minus, h):
    """:math:`(f(+h) - f(-h)) / 2h`, ``h`` broadcast against the values."""
    return (plus - minus) / (2 * h)


NOISE_FACTOR = 4
"""With a measured noise :math:`e` of ``f`` (:func:`measured_noise`), the rounding floor of a
central difference is ``NOISE_FACTOR * e / h``: the difference of two values, each off by up
to :math:`e`, is off by :math:`2e`, and the measured maximum is doubled again."""


def rounding_floor(values_max, h, u, noise=None):
    """What rounding alone can put in a central difference at step ``h``: ``16 u max|f| / h``,
    or ``4 e / h`` for a measured noise ``e`` of ``f``."""
    if noise is not None:
        return NOISE_FACTOR * noise / h
    return ROUNDING * u * values_max / h


def measured_noise(ts, values, u, xp=np):
    r"""The rounding noise of ``f`` along a direction, measured: ``values (..., K, m)`` at
    tiny steps ``ts (K,)`` (where ``f`` is a quadratic to far below its rounding), the largest
    residual of a least-squares quadratic in ``t``, at least :math:`u \max|f|` (the rounding
    of the output itself). Returns ``(..., m)``.

    A difference quotient's floor :math:`16\, u \max|f| / h` assumes each value within 16
    units in the last place; a reduction over many terms can be noisier, a network's loss is
    usually far quieter (a transformer's, measured: 0.3 units, 0.65 at most). Where the
    assumed floor hides a leaf's derivative, the checkers measure it instead."""
    V = xp.stack([xp.ones_like(ts), ts, ts**2], axis=-1)  # (K, 3)
    fit = V @ (xp.linalg.pinv(V) @ values)  # (..., K, m)
    residual = xp.max(xp.abs(values - fit), axis=-2)
    return xp.maximum(residual, u * xp.max(xp.abs(values), axis=-2))


def richardson_ladder(plus, minus, hs, u, xp=np, noise=None, consistent=False):
    r"""The Richardson estimate of a ladder of central differences, with its error bar.

    Args:
        plus, minus: ``(..., J, m)`` values of ``f`` at :math:`\theta \pm h_j v`.
        hs: ``(..., J)`` steps, largest first (any ratios); ``J >= 2``.
        u: the unit roundoff of the values' dtype.
        noise: optional ``(..., m)``: the measured noise of ``f`` (:func:`measured_noise`),
            which then sets the rounding floor.
        consistent: also distrust (an infinite bar) an estimate that the differences at the
            steps smaller than its own contradict: their truncation error is smaller, so
            each must lie within :math:`|D(h_b) - R| + \text{bar} + \text{floor}` of it. A
            ladder whose larger steps read another regime (a kink they all cross, which
            makes them look converged on the average slope) fails this.

    Returns:
        ``(value, error)``, each ``(..., m)``: see the module's docstring.
    """
    hs = hs[..., None]
    D = central(plus, minus, hs)  # (..., J, m)
    r2 = (hs[..., :-1, :] / hs[..., 1:, :]) ** 2
    R = D[..., 1:, :] + (D[..., 1:, :] - D[..., :-1, :]) / (r2 - 1)  # (..., J-1, m)
    fmax = xp.maximum(xp.abs(plus), xp.abs(minus))  # (..., J, m)
    e = None if noise is None else xp.asarray(noise)[..., None, :]
    floor = rounding_floor(fmax[..., 1:, :], hs[..., 1:, :], u, e)  # (..., J-1, m)
    if R.shape[-2] < 3:  # two rungs: the bar is what the extrapolation removed
        error = xp.abs(D[..., -1, :] - D[..., -2, :]) + floor[..., -1, :]
        return R[..., -1, :], error
    diff = xp.abs(R[..., 1:, :] - R[..., :-1, :])  # (..., J-2, m)
    spread = xp.maximum(diff[..., 1:, :], diff[..., :-1, :]) + floor[..., 1:-1, :]
    # trusted only where the ladder shows the h^2 law: the change of D shrinks from rung to
    # rung (by 1/r^2 ~ 1/4 at ratio 2) twice in a row, or sinks under rounding
    step = xp.abs(D[..., 1:, :] - D[..., :-1, :])  # (..., J-1, m), beside R
    shrinks = step[..., 1:, :] <= 0.5 * step[..., :-1, :] + 2 * floor[..., 1:, :]  # (..., J-2, m)
    asymptotic = shrinks[..., 1:, :] & shrinks[..., :-1, :]  # (..., J-3, m), R's interior
    spread = xp.where(asymptotic, spread, xp.inf)
    best = xp.argmin(spread, axis=-2)[..., None, :]  # (..., 1, m), the interior rung
    value = xp.take_along_axis(R[..., 1:-1, :], best, axis=-2)[..., 0, :]
    error = xp.take_along_axis(spread, best, axis=-2)[..., 0, :]
    if consistent:  # R at interior rung b + 1 is made of D[b + 1] and D[b + 2]
        off = xp.abs(D - value[..., None, :])  # (..., J, m)
        own = xp.take_along_axis(off, best + 1, axis=-2)  # (..., 1, m)
        rung = xp.arange(D.shape[-2]).reshape(*([1] * (D.ndim - 2)), -1, 1)
        smaller = rung >= best + 3
        floors = xp.concatenate([floor[..., :1, :], floor], axis=-2)  # (..., J, m)
        bad = smaller & (off > own + error[..., None, :] + 2 * floors)
        error = xp.where(xp.any(bad, axis=-2), xp.inf, error)
    return value, error


KINK_ORDER = 1.5
r"""The second difference :math:`f(\theta + h v) + f(\theta - h v) - 2 f(\theta)` of a smooth
``f`` shrinks like :math:`h^2` (:math:`f'' h^2`); across a kink (a slope jump :math:`\Delta`
within the step) like :math:`h` (:math:`\Delta (h - \delta)`). Its observed order below this
says the steps crossed a kink."""


def crossed_kink(plus, minus, f0, hs, u, xp=np):
    r"""Whether the steps of a ladder crossed a kink of ``f``, from its second differences.

    Central differences of a kink crossed by every step read the *average* of the two slopes,
    and change so little from rung to rung that they look converged (a ReLU unit 2e-4 from
    its kink, float32 steps 1e-2 and larger); the second difference
    :math:`s(h) = f(	heta + h v) + f(	heta - h v) - 2 f(	heta)` does not: it grows like
    :math:`h` there, like :math:`h^2` for a smooth ``f``, and never involves the derivative
    checked (a wrong gradient leaves it alone).

    Args:
        plus, minus: ``(..., J, m)`` values at :math:`	heta \pm h_j v`, steps largest first.
        f0: ``(m,)`` or ``(..., m)``: :math:`f(	heta)`.
        hs: ``(..., J)`` the steps; u: the unit roundoff.

    Returns:
        ``(...)`` bool: over the three smallest steps the observed order of :math:`|s|` is
        below :data:`KINK_ORDER` for some output, :math:`|s|` standing above rounding
        (:math:`64 u \max|f|`) at each.
    """
    f0 = xp.asarray(f0)[..., None, :]
    s = xp.abs(plus + minus - 2 * f0)[..., -3:, :]  # (..., 3, m)
    fmax = xp.maximum(xp.maximum(xp.abs(plus), xp.abs(minus)), xp.abs(f0))[..., -3:, :]
    above = xp.all(s > 4 * ROUNDING * u * fmax, axis=-2)  # (..., m)
    h = xp.asarray(hs)[..., -3:]
    ratio = xp.log(h[..., -1] / h[..., 0])[..., None]  # (..., 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        order = xp.log(s[..., -1, :] / s[..., 0, :]) / ratio
    return xp.any(above & (order < KINK_ORDER), axis=-1)


def complex_step(imag, h, u, xp=np):
    r""":math:`\operatorname{Im} f(\theta + \mathrm{i} h v) / h` and its bar ``16 u |value|``."""
    value = imag / h
    return value, ROUNDING * u * xp.abs(value)


def complex_agrees(predicted, value, error, rel, xp=np):
    """Whether complex-step ``predicted`` derivatives agree with central ``value`` known to
    within ``error`` (entry by entry): ``|predicted - value| <= error + rel * max|.|`` over
    the entries, ``max|.|`` the larger magnitude of either. A ``nan`` disagrees."""
    scale = xp.maximum(xp.max(xp.abs(predicted)), xp.max(xp.abs(value)))
    return xp.all(xp.abs(predicted - value) <= error + rel * scale)
