r"""``check_symbolic(fn)``: the accuracy of a JAX function's value and derivatives, in ULPs,
over the whole range of a float type, against the exact derivatives of its closed form.

The closed form is read from ``fn``'s program (:func:`~derivations.closed_form.symbolic`), its
derivatives taken by SymPy (``Max``, ``Min``, ``Abs`` and ``sign`` rewritten as ``Piecewise``
first) and evaluated with mpmath at every point, at 50 digits and more until two precisions
agree to 40 digits (:func:`_at`); JAX's value is ``fn`` and its
derivatives ``jax.grad`` (every custom rule of ``fn`` included: a ``custom_jvp`` tangent is
what is judged, not the primal's derivative), at the same points in ``dtype``, computed as a
batched program does it: ``jax.jit(jax.vmap(...))`` over all points at once (XLA's vectorized
``tanh`` on CPU differs from its scalar one: ``1 - tanh(x)**2`` is 0 at ``x = 10`` one point at
a time and millions of ulps off in a batch; both are wrong, differently).

The points: both signs, log-spaced from the smallest subnormal to the largest finite number
(:data:`PER_BINADE` per power of two), zero, and the branch points of the closed form (the
numbers its ``Piecewise`` conditions compare the input with) with their float neighbours. A
subnormal input is judged as XLA computes it, flushed to zero, where that passes.

How a point is judged. The exact value is rounded as ``dtype`` can hold it: beyond the largest
finite it is ``inf`` (an ``inf`` of the right sign is then exact). Its error is
:math:`|\text{jax} - \text{exact}| / \mathrm{ulp}(\text{exact})`, the spacing of ``dtype`` at
the exact value. Where the exact value is below the smallest normal number in magnitude (a
subnormal, which XLA on CPU and GPU flushes to zero), a point passes when JAX is within the
smallest normal of it: the comparison in ULPs would judge the flush, not the function.

The bar accounts for conditioning: rounding the input alone (half an ULP of ``x``) moves a
value :math:`g` by :math:`\kappa = |x g'(x) / g(x)|` half-ULPs, whatever the algorithm, so
``exp(-x * x)`` at large ``x`` cannot be better than :math:`2x^2` half-ULPs. A point fails
when its error exceeds ``ulps + kappa`` (``kappa`` computed exactly at the point, for the value
and for each derivative from the next one); ``ulps`` defaults to :data:`ULPS` of the dtype.
``atol=`` accepts any point whose absolute error is below it. Independently, a point where
JAX gives ``inf``, ``nan`` or ``0`` while the exact value is a finite normal number (or the
reverse) is flagged, and fails unless ``atol`` covers it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import sympy as sp

from derivations.closed_form import symbolic

__all__ = ["ULPS", "SymbolicReport", "check_symbolic"]

ULPS = {"float32": 4.0, "float64": 4.0}
"""The bar beyond conditioning, in ULPs of the dtype."""

PER_BINADE = 1
"""Points per power of two, each sign (float32: 277 binades; float64: 2098)."""

DENSE = (2.0**-4, 2.0**10, 16)
"""Between these magnitudes, where most functions change regime, 16 points per binade."""

MAX_DPS = 640
"""The most digits an exact value is evaluated with (:func:`_at`)."""

RANGES = (1e-4, 1.0, 1e2)
"""The edges of |x| that split the report's rows: below 1e-4, to 1, to 100, beyond."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One quantity over one range of inputs."""

    quantity: str  # "value", "d1", "d2"
    range: str
    points: int
    max_ulp: float
    median_ulp: float
    worst_x: float
    failed: int


@dataclasses.dataclass
class SymbolicReport:
    """What :func:`check_symbolic` measured: ``rows`` per quantity and range, ``flags`` (points
    where JAX gives inf, nan or 0 and the exact value is a finite normal number, or the
    reverse), ``ok`` (no point beyond the bar), ``description``; ``x`` and ``ulp`` (per quantity:
    the points and their errors) for :meth:`plot`."""

    rows: list[Row]
    flags: list[dict]
    description: str
    x: np.ndarray
    ulp: dict[str, np.ndarray]

    @property
    def ok(self) -> bool:
        return all(r.failed == 0 for r in self.rows)

    def __str__(self) -> str:
        head = ("quantity", "range", "points", "max ulp", "median ulp", "worst x", "failed")
        lines = [(r.quantity, r.range, str(r.points), f"{r.max_ulp:.3g}", f"{r.median_ulp:.3g}",
                  f"{r.worst_x:.6g}", str(r.failed)) for r in self.rows]  # fmt: skip
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [self.description, fmt.format(*head)] + [fmt.format(*line) for line in lines]
        for f in self.flags[:12]:
            out.append(f"  {f['quantity']} at x = {f['x']:.9g}: jax {f['jax']:.9g}, exact "
                       f"{f['exact']}")  # fmt: skip
        if len(self.flags) > 12:
            out.append(f"  ... {len(self.flags) - 12} more such points")
        out.append("OK" if self.ok else "FAILED")
        return "\n".join(out)

    def to_json(self, **kw) -> str:
        return json.dumps({"ok": self.ok, "description": self.description,
                           "rows": [dataclasses.asdict(r) for r in self.rows],
                           "flags": self.flags}, **kw)  # fmt: skip

    def plot(self, ax=None):
        """The ULP error of each quantity against x (symlog), matplotlib imported on call."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.figure(figsize=(7, 4)).add_subplot()
        for q, e in self.ulp.items():
            ax.plot(self.x, np.where(np.isfinite(e), e, np.nan), ".", ms=2, label=q)
        ax.set_xscale("symlog", linthresh=1e-30)
        ax.set_xticks([-1e20, -1.0, 0.0, 1.0, 1e20])
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("x")
        ax.set_ylabel("error, ULPs of the exact value")
        ax.legend()
        return ax


def check_symbolic(fn: Callable, *, dtype: str = "float32", order: int = 1,
                   ulps: float | None = None, atol: float = 0.0) -> SymbolicReport:  # fmt: skip
    """The value and derivatives up to ``order`` of a scalar function ``fn``, judged in ULPs
    of ``dtype`` over its whole range (module docstring)."""
    if dtype not in ULPS:
        raise ValueError(f"check_symbolic: dtype must be one of {sorted(ULPS)}; got {dtype!r}")
    if order not in (0, 1, 2):
        raise ValueError(f"check_symbolic: order must be 0, 1 or 2; got {order!r}")
    from functional_nn._util._precision import x64

    np_dtype = np.dtype(dtype)
    with x64(dtype == "float64"):
        expr = symbolic(fn, np_dtype.type(0.0))
    if not isinstance(expr, sp.Expr) or len(expr.free_symbols) > 1:
        raise ValueError(f"check_symbolic: fn must be a function of one real scalar; read {expr}")
    (x,) = expr.free_symbols or {sp.Symbol("x", real=True)}
    piecewise = expr.rewrite(sp.Piecewise)
    exact = [piecewise]
    for _ in range(order + 1):  # one more: the conditioning of the last
        exact.append(sp.diff(exact[-1], x))
    pts, branch = _points(np_dtype, piecewise, x)
    with x64(dtype == "float64"):
        xs = jnp.asarray(pts, dtype)
        got = [np.asarray(jax.jit(jax.vmap(fn))(xs), np.float64)]
        g = fn
        for _ in range(order):
            g = jax.grad(g)
            got.append(np.asarray(jax.jit(jax.vmap(g))(xs), np.float64))
    funcs = [sp.lambdify(x, e, "mpmath") for e in exact]
    names = ["value"] + [f"d{k}" for k in range(1, order + 1)]
    bar = ULPS[dtype] if ulps is None else float(ulps)
    finfo = np.finfo(np_dtype)
    rows, flags, errors = [], [], {}
    known: dict[tuple, Any] = {}  # (derivative, point) -> exact value: each made once

    def exact_at(j: int, i: int | None):  # i None: at 0, as a flushed subnormal reads
        if (j, i) not in known:
            p = 0.0 if i is None else pts[i]
            known[j, i] = _value(funcs[j], p, i is None or float(p) in branch)
        return known[j, i]

    with mpmath.workdps(60):  # the branch points' offsets of 1e-45 held
        for k, name in enumerate(names):
            err = np.zeros(len(pts))
            failed = np.zeros(len(pts), bool)
            for i, p in enumerate(pts):
                e, de = exact_at(k, i), exact_at(k + 1, i)
                err[i], failed[i], flag = _judge(got[k][i], e, de, p, finfo, bar, atol)
                if failed[i] and p != 0 and abs(p) < finfo.tiny:  # XLA flushes a subnormal x to 0
                    at0 = exact_at(k, None), exact_at(k + 1, None)
                    flushed = _judge(got[k][i], *at0, 0.0, finfo, bar, atol)
                    if not flushed[1]:
                        err[i], failed[i], flag = flushed
                if flag:
                    shown = mpmath.nstr(e, 12) if e is not None else "undefined"
                    flags.append({"quantity": name, "x": float(p), "jax": float(got[k][i]),
                                  "exact": shown})  # fmt: skip
            errors[name] = err
            rows += _rows(name, pts, err, failed)
    description = (
        f"check_symbolic: {getattr(fn, '__name__', 'fn')} in {dtype}, {len(pts)} points (both "
        f"signs, {PER_BINADE} per binade from the smallest subnormal to the largest finite, "
        f"zero, the branch points); bar {bar:g} ulp + the conditioning at each point"
        + (f", atol {atol:g}" if atol else "")
        + f"; closed form {sp.sstr(expr)[:120]}"
    )
    return SymbolicReport(rows, flags, description, pts, errors)


def _points(dtype: np.dtype, expr, x) -> np.ndarray:
    finfo = np.finfo(dtype)
    lo = math.log2(float(finfo.smallest_subnormal))
    hi = math.log2(float(finfo.max))
    with np.errstate(over="ignore"):
        mags = np.exp2(np.linspace(lo, hi, int((hi - lo) * PER_BINADE) + 1)).astype(dtype)
    d_lo, d_hi, per = DENSE
    dense = np.exp2(np.linspace(math.log2(d_lo), math.log2(d_hi),
                                int(math.log2(d_hi / d_lo) * per) + 1)).astype(dtype)  # fmt: skip
    mags = np.concatenate([mags, dense])
    mags = mags[np.isfinite(mags) & (mags > 0)]
    branch = []
    for rel in expr.atoms(sp.Rel):
        for side in (rel.lhs, rel.rhs):
            if side.is_number and side.is_real:
                c = dtype.type(float(side))
                branch += [
                    c,
                    np.nextafter(c, dtype.type(np.inf)),
                    np.nextafter(c, -dtype.type(np.inf)),
                ]
    pts = np.concatenate([-mags[::-1], [dtype.type(0)], mags, np.asarray(branch, dtype)])
    return np.unique(pts[np.isfinite(pts)]), {float(b) for b in branch[::3]}


def _value(f, p, at_branch: bool = False):
    """The exact value at p (an mpf), or None where it is undefined (a nan, a pole, a kink,
    an argument mpmath cannot take). At a branch point the closed form's pieces may disagree
    about a derivative that exists (``Max(0, x) + log1p(exp(-|x|))`` at 0): there the value
    at p is kept where it agrees with the limits from both sides, the limit taken where only
    the sides agree, and None (a kink: not judged) where they do not."""
    v = _at(f, mpmath.mpf(float(p)))
    if not at_branch:
        return v
    delta = mpmath.mpf(10) ** -45 * max(1, abs(float(p)))
    a, b = _at(f, mpmath.mpf(float(p)) - delta), _at(f, mpmath.mpf(float(p)) + delta)
    if a is None or b is None:
        return v
    tol = mpmath.mpf(10) ** -30 * max(1, abs(a))
    if abs(a - b) > tol:
        return None
    return v if v is not None and abs(v - a) <= tol else (a + b) / 2


def _at(f, p):
    """``f(p)`` exactly enough: evaluated at 50 digits and again at more, the precision doubled
    (to :data:`MAX_DPS`) until two evaluations agree to 40 digits (a cancellation such as
    ``2 - erfc(-11)`` loses what 50 digits hold; a 0 is trusted only at the most digits); None
    where they never agree, or f is undefined."""
    dps, previous = 50, None
    while dps <= MAX_DPS:
        with mpmath.workdps(dps):
            try:
                v = mpmath.mpmathify(f(mpmath.mpf(p)))
            except (ZeroDivisionError, ValueError, TypeError, OverflowError):
                return None
            if isinstance(v, mpmath.mpc):
                if v.imag != 0:
                    return None
                v = v.real
            if mpmath.isnan(v):
                return None
        agree = previous is not None and abs(v - previous) <= mpmath.mpf(10) ** -40 * abs(v)
        if agree and (v != 0 or dps >= MAX_DPS):  # a 0 may be all a cancellation left
            return v
        previous, dps = v, 2 * dps if previous is not None else 80
    return previous if previous == 0 else None


def _judge(jax_v: float, e, de, p, finfo, bar: float, atol: float):
    """``(ulp error, failed, flagged)`` of one point."""
    if e is None:
        return 0.0, False, False  # undefined exactly: nothing to judge
    tiny, big = float(finfo.tiny), float(finfo.max)
    exact_inf, exact_normal = abs(e) > big, tiny <= abs(e) <= big
    jax_normal = math.isfinite(jax_v) and abs(jax_v) >= tiny
    flagged = (exact_normal and not jax_normal and (jax_v == 0 or not math.isfinite(jax_v))) or (
        (exact_inf or e == 0) and jax_normal)  # fmt: skip
    if exact_inf:  # not held: the dtype's inf
        right = math.isinf(jax_v) and (jax_v > 0) == (e > 0)
        return (0.0 if right else math.inf), not right, flagged
    if not math.isfinite(jax_v):
        return math.inf, True, True
    gap = abs(mpmath.mpf(jax_v) - e)
    ulp_err = float(gap / _ulp(e, finfo))
    if gap <= atol:
        return ulp_err, False, flagged
    if abs(e) < tiny:  # subnormal or zero exactly: within the smallest normal, no ulps
        return math.nan, bool(gap > tiny), flagged
    kappa = float(abs(mpmath.mpf(float(p)) * de / e)) if de is not None else 0.0
    return ulp_err, bool(ulp_err > bar + kappa) or flagged, flagged


def _ulp(e, finfo) -> mpmath.mpf:
    """The spacing of the dtype at |e| (the subnormal spacing below the smallest normal)."""
    a = abs(e)
    if a < finfo.tiny:
        return mpmath.mpf(float(finfo.smallest_subnormal))
    exponent = int(mpmath.floor(mpmath.log(a, 2)))
    return mpmath.mpf(2) ** (exponent - finfo.nmant)


def _rows(name: str, pts: np.ndarray, err: np.ndarray, failed: np.ndarray) -> list[Row]:
    a = np.abs(pts)
    edges = (0.0, *RANGES, math.inf)
    rows = []
    for sign, label in ((-1, "-"), (1, "+")):
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (np.sign(pts) == sign) & (a >= lo) & (a < hi)
            if not m.any():
                continue
            e = err[m]
            if np.isnan(e).all():  # every exact value subnormal: judged absolutely
                e = np.zeros_like(e)
            e = np.where(np.isnan(e), 0.0, e)
            worst = int(np.argmax(e))
            rng = f"{label}[{lo:g}, {hi:g})"
            rows.append(Row(name, rng, int(m.sum()), float(np.max(e)), float(np.median(e)),
                            float(pts[m][worst]), int(failed[m].sum())))  # fmt: skip
    m = pts == 0
    if m.any():
        rows.append(
            Row(name, "0", 1, float(err[m][0]), float(err[m][0]), 0.0, int(failed[m].sum()))
        )
    return rows
