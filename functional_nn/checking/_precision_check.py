r"""``check_grad`` of a program that computes in low precision, judged against itself in float64.

A float32 central difference needs a step near :math:`u^{1/3}` of the entry; in bfloat16
(:math:`u = 2^{-7}`) no finite difference of the program resolves anything. So the reference is
the same program raised to float64 (:func:`~functional_nn.program.promote`), differenced in
float64 with float64 steps (Richardson central differences, confirmed like every central
reference: a kink crossed is a kink, left out), and the gradient the program computes in its
own precision is compared with it per leaf. A leaf fails only when its error exceeds what the
program's own rounding explains, the **yardstick**, one of:

- **the spread** (default): the gradient computed again at :data:`NUDGES` points whose every
  parameter is moved by one unit in the last place of the lowest precision the program
  computes in (random signs; half a unit where the parameters are stored wider and rounded
  to it inside, :func:`nudge`). Rounding is chaotic, so the spread of those gradients is the
  size of the program's rounding error; the bar of an entry is :data:`SPREAD_FACTOR` times the
  spread along each direction, and never less than :data:`FLOOR` units in the last place of
  the candidate along it (:math:`F u \sum_i |v_i g_i|`: rounding that no nudge moves, such
  as data rounded to bfloat16 before the first layer);
- **a baseline** (``baseline=``, FlashAttention's convention): a plain implementation of the
  same function, its own gradient at the same precision; a leaf passes when its error is at
  most :data:`BASELINE_FACTOR` times the baseline's largest error on that leaf plus the same
  rounding floor.

The rows say which: the description names the reference (``central (float64) of the
promoted program``) and the yardstick. No Taylor row is made: at float64 steps the linear
term of a low-precision gradient's own rounding dominates the remainder (slope 1 for a right
gradient), so the row would judge the dtype, not the derivative.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import x64
from functional_nn.checking._comparison import GradCheckReport, leaf_paths, n_leaves, row_within
from functional_nn.checking._directions import seed_words
from functional_nn.checking._progress import Tracker
from functional_nn.checking._references import (
    Directions,
    LeafReferences,
    failing,
    jitted,
    params_dtype,
    reference_name,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE
from functional_nn.differences._blocks import LeafFunction
from functional_nn.program import CannotPromote, compute_dtypes, jaxpr_dtypes, promote

LOW = ("bfloat16", "float16")
"""Parameter dtypes that only this path checks (no finite difference of the program itself
resolves a derivative there)."""

NUDGES = 4
"""Gradients at nudged points the spread is measured from."""

SPREAD_FACTOR = 4.0
"""An entry's bar: this many times the spread of the gradient over the nudges."""

FLOOR = 4.0
"""The least bar: this many units in the last place of the candidate along a direction."""

BASELINE_FACTOR = 2.0
"""With ``baseline=``: at most this many times the baseline's error (FlashAttention's 2)."""


def lowest(dtypes) -> str:
    """The least precise of some floating dtype names (largest epsilon)."""
    return max(dtypes, key=lambda d: float(jnp.finfo(d).eps))


def precision_of(f, params, dtype: str, closed=None) -> str:
    """The least precise floating type ``f``'s program computes in at ``params`` (its
    parameters' ``dtype`` included); ``closed``: its program, when the caller traced it."""
    try:
        found = jaxpr_dtypes(closed) if closed is not None else compute_dtypes(f, params)
    except Exception:  # noqa: BLE001 -- a program that cannot be read: its parameters' dtype
        found = set()
    real = {d for d in found if jnp.issubdtype(d, jnp.floating)}
    return lowest(real | {dtype})


def applies(dtype: str, compute: str, baseline) -> bool:
    """Whether a check takes this path: low-precision parameters, a program computing below
    its parameters' precision (mixed precision), or a baseline given."""
    return baseline is not None or dtype in LOW or compute != dtype


def low_precision(f, params, grad, baseline, view, order, grad_of, closed=None, *, pattern, k,
                  key, budget, callback, where="check_grad"):  # fmt: skip
    """``check_grad``'s report where this path applies (:func:`applies`), else None."""
    if view.paths and baseline is not None:
        raise ValueError(f"{where}: baseline= takes real parameters; these are complex")
    own = params_dtype(params, where)
    compute = precision_of(f, params, own, closed)
    if not applies(own, compute, baseline):
        return None
    if order != 1:
        raise ValueError(f"{where}: order=2 of a program computing in {compute} is not "
                         "checked: check its gradient (order=1)")  # fmt: skip
    grad_fn = grad if grad is not None else grad_of(f)
    return check_low_precision(f, params, grad_fn, baseline, dtype=own, compute=compute,
                               pattern=pattern, k=k, key=key, budget=budget,
                               callback=callback, where=where)  # fmt: skip


def rejudge(f, params, grad_fn, report, *, pattern, k, key, budget, where="check_grad"):
    """A float32 check's failing leaves judged again against the float64 program.

    Float32 central differences step across ReLU kinks (their steps are a thousand times
    float64's); a failure they report is kept only if the float64 reference confirms it. The
    leaves that pass there get that row (and their Taylor row, read at float32 steps, is no
    verdict: ``skip``); a passing check costs nothing more. ``report`` unchanged where the
    program cannot be raised (the description says so)."""
    failed = sorted({r.leaf for r in report.rows if r.status == "fail"})
    if not failed:
        return report
    paths = leaf_paths(params)
    only = [paths.index(p) for p in failed if p in paths]
    try:
        again = check_low_precision(
            f,
            params,
            grad_fn,
            None,
            dtype="float32",
            compute="float32",
            pattern=pattern,
            k=k,
            key=key,
            budget=budget,
            callback=None,
            where=where,
            only=only,
        )
    except ValueError as error:  # no float64 program: the float32 verdicts stand
        report.description += f"; not judged again in float64 ({error})"
        return report
    new = {r.leaf: r for r in again.rows}
    # cleared: passed against the float64 program with most entries compared (a reference
    # that resolves little, entries left out as kinks, clears nothing)
    cleared = {leaf for leaf, r in new.items() if r.status == "pass"
               or (r.status == "kink" and r.kinks <= 0.1 * math.prod(r.shape))}  # fmt: skip
    rows = []
    for r in report.rows:
        if r.method == "grad" and r.leaf in cleared:
            r = new[r.leaf]
        elif r.method == "grad" and r.leaf in new and new[r.leaf].status == "fail":
            r = new[r.leaf]  # confirmed: the float64 program's row, with its yardstick
        elif r.method == "taylor" and r.leaf in cleared and r.status == "fail":
            r = r._replace(status="skip")
        rows.append(r)
    report.rows[:] = rows
    confirmed = ", ".join(sorted(set(failed) - cleared)) or "none"
    report.description += (
        f"; failing leaves judged again against the float64 program ({again.reference} in "
        f"float64, yardstick {spread_note('float32')}): {', '.join(failed)}; confirmed: "
        f"{confirmed}"
    )
    return report


def check_low_precision(
    f,
    params,
    grad_fn,
    baseline,
    *,
    dtype,
    compute,
    pattern,
    k,
    key,
    budget,
    callback,
    where="check_grad",
    only=None,
) -> GradCheckReport:
    """The rows of ``check_grad`` for ``f`` computing in ``compute`` (module docstring);
    ``only``: the leaves (indices) to check, default every leaf."""
    f64, p64 = float64_of(f, params, compute, where)
    start = time.perf_counter()
    g_jit = jitted(grad_fn)
    g = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(g_jit(params))]
    seconds = time.perf_counter() - start
    u = float(jnp.finfo(compute).eps)
    spread = (
        gradient_spread(g_jit, params, g, nudge(dtype, compute), key) if baseline is None else None
    )
    base = None
    if baseline is not None:
        gb = jitted(jax.grad(baseline))(params)
        base = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(gb)]
    paths = leaf_paths(params)
    tracker = Tracker(callback, paths)
    seed = seed_words(0 if key is None else key)
    rows, names = [], []
    with x64():
        lf = LeafFunction(lambda p: f64(p), p64, (), pattern, budget, tracker)
        P = sum(int(np.size(a)) for a in lf.leaves)
        refs = LeafReferences(lf, "float64", seed, complex_blocks=False)
        tol = u  # what exceeds the yardstick, relative to the leaf's largest entry
        for l, path in enumerate(paths):
            if only is not None and l not in only:
                continue
            tracker.leaf(l)
            size, shape = int(np.size(lf.leaves[l])), tuple(np.shape(lf.leaves[l]))
            unit = P <= DIRECTIONAL_ABOVE or size <= k
            d = Directions(index=np.arange(size)) if unit else refs.random(l, k)
            before = lf.evaluations
            ref = refs.reference(l, d)
            cand = d.along(g[l])
            floor = FLOOR * u * abs_along(d, g[l])
            if base is None:
                bar = np.maximum(SPREAD_FACTOR * abs_along(d, spread[l]), floor)
            else:
                base_err = np.abs(d.along(base[l]) - ref.value[:, 0]).max(initial=0)
                bar = BASELINE_FACTOR * base_err + floor
            keep = None if ref.crossed is None else ~ref.crossed
            err = ref.error[:, 0] + bar
            ref = refs.confirm(l, d, ref, failing(cand, ref.value[:, 0], err, tol, keep))
            err = ref.error[:, 0] + bar
            names.append(ref.name)
            out_shape = shape if unit else (k,)
            excl = None if ref.crossed is None else ref.crossed.reshape(out_shape)
            rows.append(row_within(
                "grad", path, cand.reshape(out_shape), ref.value[:, 0].reshape(out_shape),
                err.reshape(out_shape), tol, excl, None, lf.evaluations - before, seconds,
            ))  # fmt: skip
    name = reference_name(names)
    yardstick = (f"{BASELINE_FACTOR:g} x the baseline's error + {FLOOR:g} ulp ({compute})"
                 if baseline is not None else
                 spread_note(compute))  # fmt: skip
    description = (
        f"{where}: P={P}, {n_leaves(len(paths))}, parameters {dtype}, computed in {compute}; "
        f"reference {name} (float64) of the promoted program, yardstick {yardstick}; "
        f"{lf.evaluations} evaluations in float64, no Taylor row"
    )
    return GradCheckReport(rows, name, description, dtype, {})


def float64_of(f, params, compute: str, where: str):
    """``(promote(f), params in float64)``, or a ``ValueError`` saying why the program has no
    float64 reference (an equation that cannot be raised, or a kernel run at its own dtypes)."""
    f64 = promote(f, like=(params,))
    p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
    with x64():
        try:
            jax.eval_shape(f64, p64)
        except CannotPromote as error:
            raise ValueError(
                f"{where}: the program computes in {compute}, and its float64 reference cannot "
                f"be made: {error}"
            ) from None
    if f64.at_own_dtypes:  # a kernel under a custom rule: its differences are not float64's
        raise ValueError(
            f"{where}: the program computes in {compute}, and its float64 reference cannot be "
            f"made: {', '.join(sorted(f64.at_own_dtypes))} runs at its own dtypes"
        )
    return f64, p64


def nudge(dtype: str, compute: str) -> float:
    """The relative move of every parameter for the spread: one unit in the last place of
    ``compute`` (its epsilon) where the parameters are stored in it, so that each moves to a
    neighbour; half of it where they are stored wider and rounded to ``compute`` inside (mixed
    precision), the most that rounding moves them."""
    u = float(jnp.finfo(compute).eps)
    return u if jnp.finfo(dtype).eps >= jnp.finfo(compute).eps else u / 2


def nudged(params, u: float, key, n: int):
    """``n`` copies of ``params`` with every entry moved by ``u`` of itself (random signs,
    each copy its own), in the leaves' dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng([*seed_words(0 if key is None else key), 7])
    for _ in range(n):
        moved = []
        for a in leaves:
            x = np.asarray(a, np.float64)
            s = rng.choice([-1.0, 1.0], size=x.shape)
            moved.append(jnp.asarray(x * (1 + u * s), jnp.result_type(a)))
        yield jax.tree_util.tree_unflatten(treedef, moved)


def spread_note(compute: str) -> str:
    return (f"{SPREAD_FACTOR:g} x the spread over {NUDGES} one-ulp nudges ({compute}), at least "
            f"{FLOOR:g} ulp")  # fmt: skip


def gradient_spread(g_jit, params, g, u, key) -> list[np.ndarray]:
    """Per leaf, the largest change of the gradient over :data:`NUDGES` points whose every
    parameter moved by ``u`` of itself (random signs): the size of its rounding."""
    spread = [np.zeros_like(a) for a in g]
    for moved in nudged(params, u, key, NUDGES):
        for i, a in enumerate(jax.tree_util.tree_leaves(g_jit(moved))):
            spread[i] = np.maximum(spread[i], np.abs(np.asarray(a, np.float64) - g[i]))
    return spread


def abs_along(d: Directions, a: np.ndarray) -> np.ndarray:
    r""":math:`\sum_i |v_i| a_i` for each direction (``a`` non-negative, leaf-shaped)."""
    a = np.abs(np.asarray(a, np.float64)).ravel()
    if d.index is not None:
        return a[d.index]
    out = np.empty(d.n)
    for start in range(0, d.n, 8):
        js = range(start, min(start + 8, d.n))
        out[start : start + len(js)] = np.abs(d.blocks.blocks(js).reshape(len(js), -1)) @ a
    return out


class Judged(NamedTuple):
    """What a ``grad`` row of ``check_grad`` was made of, to judge it again."""

    path: str
    d: Directions
    cand: np.ndarray
    ref: Any  # the leaf's Reference
    err: np.ndarray  # the reference's error plus the candidate's rounding, per direction
    tol: float
    out_shape: tuple
    exclude: np.ndarray | None
    evaluations: int
    seconds: float


def within_spread(rows: dict, judged: dict, g_jit, params, g_leaves, dtype: str, key):
    r"""``check_grad``'s failing ``grad`` rows in ``dtype`` (float32 or float64) judged again
    with the rounding that the gradient's own computation carries: ``(rows, note)``.

    The candidate's rounding that a row allows (``ROUNDING`` ulps of :math:`\sum_i |v_i g_i|`)
    is relative to the gradient itself; where a leaf's gradient is a sum that cancels (at a
    minimum, where every entry is 0 up to rounding; a bias whose terms cancel by symmetry)
    the rounding is relative to the terms, not to their sum, and both the candidate and the
    reference carry it. The spread measures it: the gradient at :data:`NUDGES` points whose
    every parameter moved by one unit in its last place (:func:`gradient_spread`, the
    compiled gradient again: nothing compiles). A failing leaf passes where its error is
    within :data:`SPREAD_FACTOR` times the leaf's largest change along each direction (its
    entries' rounding is alike; four nudges may leave one entry's unmoved); a wrong gradient
    stays far beyond it. Only failing leaves are judged again, so a passing check costs
    nothing more."""
    failed = [l for l, row in rows.items() if row.status == "fail" and l in judged]
    if not failed:
        return rows, ""
    u = float(jnp.finfo(dtype).eps)
    g = [np.asarray(a, np.float64) for a in g_leaves]
    spread = gradient_spread(g_jit, params, g, u, key)
    passed = []
    for l in failed:
        j = judged[l]
        # the leaf's largest change: rounding is alike across a leaf whose entries cancel,
        # and four nudges may leave one entry's rounding unmoved
        err = j.err + SPREAD_FACTOR * abs_along(j.d, np.full(spread[l].shape, spread[l].max()))
        row = row_within(
            "grad", j.path, j.cand.reshape(j.out_shape), j.ref.value[:, 0].reshape(j.out_shape),
            err.reshape(j.out_shape), j.tol, j.exclude, None, j.evaluations, j.seconds,
        )  # fmt: skip
        if row.status != "fail":
            rows[l] = row
            passed.append(j.path)
    return rows, judged_again("leaves", "gradient", [judged[l].path for l in failed], passed,
                              dtype)  # fmt: skip


def judged_again(kind: str, of: str, judged: list[str], passed: list[str], dtype: str) -> str:
    """The description's note on rows judged again within the spread (:func:`within_spread`,
    and ``check_vjp``'s and ``check_jvp``'s own): which were, and which of them passed."""
    return (f"; failing {kind} judged again within {SPREAD_FACTOR:g} x the spread of the {of} "
            f"over {NUDGES} one-ulp nudges ({dtype}): {', '.join(judged)}; passed: "
            f"{', '.join(passed) or 'none'}")  # fmt: skip
