r"""``check_gradients``: every gradient method of a network against a reference, leaf by leaf.

The network front door of the checking engine. Each method (the common signature
``(net, loss, params, x, y) -> (J, grads)``) runs jitted, once to compile and once timed; its
gradient is compared with the reference's leaf by leaf (:func:`compare_gradients`, the
bars of :data:`TOLERANCES`) and each comparison becomes a row of the
:class:`GradCheckReport` that :func:`~functional_nn.check_grad` and
:func:`~functional_nn.check_vjp` also return. Finite differences come from
:func:`~functional_nn.finite_difference_grad`; above :data:`DIRECTIONAL_ABOVE` parameters the
check runs along ``k`` random directions in each leaf through the checkers' engine
(:class:`~functional_nn.checking._references.LeafReferences`), with ReLU kinks detected.

Every program here runs with the highest matmul precision, whatever the process default.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import highest_precision
from functional_nn._util._validation import check_int, check_key, check_real
from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    compare_gradients,
    compare_leaf,
    leaf_paths,
    leaf_row,
    row_within,
)
from functional_nn.checking._directions import seed_words
from functional_nn.checking._leaves import flat_float64
from functional_nn.checking._precision_check import NUDGES, SPREAD_FACTOR, judged_again, nudged
from functional_nn.checking._programs import compile_methods, run_method
from functional_nn.checking._references import LeafReferences
from functional_nn.checking._tolerances import (
    DIRECTIONAL_ABOVE,
    FINITE_DIFFERENCE_METHODS,
    GRADIENT_SCALED,
    TOLERANCES,
)
from functional_nn.differences._blocks import LeafFunction
from functional_nn.differences._estimates import step_scale
from functional_nn.differences._flat import ravel_params
from functional_nn.differences._network_methods import (
    complex_step,
    finite_differences,
    local_finite_differences,
    relu_pattern,
)
from functional_nn.differences._steps import default_eps
from functional_nn.lecture._cost import autodiff, objective, prepare
from functional_nn.lecture._gradients import backprop, jacobian_chain
from functional_nn.lecture._network import num_params


def default_methods() -> dict[str, Callable]:
    """Every built-in gradient method by name (the reference ``autodiff`` apart)."""
    return {
        "jacobian_chain": jacobian_chain,
        "backprop": backprop,
        "finite_differences": finite_differences,
        "complex_step": complex_step,
        "local_finite_differences": local_finite_differences,
    }


def random_directions(params, k: int, key) -> jax.Array:
    """``k`` random unit directions (2-norm) in the flattened parameter space, ``(k, P)``."""
    P = num_params(params)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    v = jax.random.normal(key, (k, P), dtype)
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)


@highest_precision
def directional_derivatives(net, loss, params, x, y, v, reduction="sum", eps=None):
    """Central differences of J along each row of ``v`` (``(k, P)`` unit vectors): ``2k``
    evaluations, whatever ``P``; and whether each step crossed a ReLU kink.

    The step is :math:`h = \\epsilon \\max(1, \\max_i |\\theta_i|)`, ``eps`` defaulting to the
    central scheme's :math:`u^{1/3}`. Traceable (``jit`` it); :func:`check_gradients` runs the
    differences leaf by leaf through the checkers' engine
    (:class:`~functional_nn.checking._references.LeafReferences`).
    """
    theta, unravel = ravel_params(params)
    eps = default_eps("central", theta.dtype) if eps is None else eps
    h = eps * step_scale(jnp.max(jnp.abs(theta)), jnp)
    J = objective(net, loss, reduction)
    base = relu_pattern(net, params, x)

    def one(vk):
        plus, minus = unravel(theta + h * vk), unravel(theta - h * vk)
        d = (J(plus, x, y) - J(minus, x, y)) / (2 * h)
        crossed = jnp.any(relu_pattern(net, plus, x) != base) | jnp.any(
            relu_pattern(net, minus, x) != base
        )
        return d, crossed

    return jax.lax.map(one, v, batch_size=min(16, v.shape[0]))


@highest_precision
def check_gradients(
    net,
    loss,
    params,
    x,
    y,
    methods: Mapping[str, Callable] | None = None,
    reference: str = "autodiff",
    *,
    reduction: str = "sum",
    tolerances: Mapping[str, float] | None = None,
    directional: bool | None = None,
    k: int = 16,
    key: jax.Array | None = None,
    dtype: str | None = None,
) -> GradCheckReport:
    """Check gradient methods against a reference, leaf by leaf, with the bars of ``TOLERANCES``.

    Args:
        net, loss, params, x, y: the problem; float64 parameters for the float64 bars
            (``jax_enable_x64`` must then be on: a float64 check is refused otherwise).
        methods: name -> method with the common signature ``(net, loss, params, x, y) ->
            (J, grads)``; default :func:`default_methods`. A method that accepts
            ``return_info`` reports its evaluations and kinks.
        reference: name of the method the others are compared with: a key of ``methods``
            or ``"autodiff"``.
        reduction: ``"sum"`` or ``"mean"``, passed to every method when not ``"sum"``.
        tolerances: name -> bar, overriding :data:`TOLERANCES`.
        directional: use the directional check instead of the finite-difference methods;
            ``None``: when ``P > DIRECTIONAL_ABOVE``. Every method's gradient ``g`` is then
            compared along ``k`` random directions ``v`` in each leaf: Richardson central
            differences of J against ``g . v``, error ``max (|fd - g . v| - bar) /
            (||g_ref|| ||v||)``, ``bar`` the differences' own error bar.
        k: number of directions; key: PRNG key for them (default ``jax.random.key(0)``).
        dtype: the precision the check must run in (``"float64"`` or ``"float32"``); the
            parameters must have it. Asking for float64 while x64 is off is an error that
            says how to turn it on, never a silent float32 check.

    Returns:
        :class:`GradCheckReport`.

    Raises:
        ValueError: nothing to check (``methods={}``), a reference that is neither
            ``"autodiff"`` nor a method, or data the methods refuse (every argument is checked
            as the gradient methods check it, e.g. BCE targets outside [0, 1]).

    Every program runs with the highest matmul precision, whatever the process default.
    """
    prepare(net, loss, params, x, y, reduction, "check_gradients")
    dtype = _check_options(methods, directional, k, key, dtype)
    if dtype is not None and jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "check_gradients: a float64 check was asked for, but JAX's x64 mode is off, so "
            "every array is float32; call jax.config.update('jax_enable_x64', True) at the "
            "start of the process (as scripts/validate.py does)"
        )
    name = jnp.dtype(jnp.result_type(*jax.tree_util.tree_leaves(params))).name
    if dtype is not None and name != jnp.dtype(dtype).name:
        raise ValueError(f"check_gradients: dtype={dtype!r} was asked for, but params are {name}")
    if name not in TOLERANCES:
        raise ValueError(
            f"check_gradients: parameters of dtype {name}; expected float32 or float64 "
            "(for float64, enable x64 at the start of the process: "
            "jax.config.update('jax_enable_x64', True))"
        )
    methods = dict(default_methods() if methods is None else methods)
    if not methods or set(methods) == {reference}:
        raise ValueError(
            "check_gradients: nothing to check: methods is empty (or holds only the reference "
            f"{reference!r}); pass methods={{'name': method}}, or None for every built-in one"
        )
    bars = {**TOLERANCES[name], **_check_tolerances(tolerances, methods, reference)}
    if reference == "autodiff" and "autodiff" not in methods:
        reference_method = autodiff
    elif reference in methods:
        reference_method = methods.pop(reference)
    else:
        raise ValueError(
            f"check_gradients: reference {reference!r} is neither 'autodiff' nor one of "
            f"the methods {sorted(methods)}"
        )
    P = num_params(params)
    if directional is None:
        directional = P > DIRECTIONAL_ABOVE
    if directional:
        methods = {n: m for n, m in methods.items() if n not in FINITE_DIFFERENCE_METHODS}

    executables = compile_methods(
        {**methods, "\0reference": reference_method}, net, loss, params, x, y, reduction
    )
    J_ref, g_ref, _, _, _ = run_method(executables["\0reference"], params, x, y)
    rows: list[CheckRow] = []
    results = {reference: (J_ref, g_ref)}
    redo: dict = {}
    for mname in methods:
        J, grads, n_eval, kinks, seconds = run_method(executables[mname], params, x, y)
        results[mname] = (J, grads)
        tol = bars.get(mname, bars["backprop"])
        scale = "gradient" if mname in GRADIENT_SCALED else "leaf"
        comparisons = compare_gradients(grads, g_ref, exclude=kinks, scale=scale)
        kink_counts = (
            [int(np.sum(np.asarray(kk))) for kk in jax.tree_util.tree_leaves(kinks)]
            if kinks is not None
            else [0] * len(comparisons)
        )
        j = compare_leaf("J", J, J_ref)
        rows.append(leaf_row(mname, j, bars["J"], 0, n_eval, seconds))
        for c, n_kinks in zip(comparisons, kink_counts, strict=True):
            rows.append(leaf_row(mname, c, tol, n_kinks, n_eval, seconds))
        if scale == "leaf":
            redo[mname] = (grads, kinks, tol, n_eval, seconds)

    note = _within_spread(rows, redo, executables["\0reference"], params, x, y, g_ref, name,
                          key)  # fmt: skip
    if directional:
        rows += _directional_rows(net, loss, params, x, y, results, reduction, k, key, bars)
    description = (
        f"sizes={net.sizes} hidden={net.hidden} output={net.output} bias={net.bias} "
        f"loss={getattr(loss, 'name', loss)} N={x.shape[0] if jnp.ndim(x) == 2 else 1} P={P}"
    ) + note
    return GradCheckReport(rows, reference, description, name)


def _within_spread(rows, redo, reference, params, x, y, g_ref, dtype, key) -> str:
    """Failing leaf rows of the methods compared leaf by leaf, judged again (in place) within
    the rounding that the reference's own computation carries, as ``check_grad`` judges a
    gradient that vanishes up to rounding (a bias whose terms cancel: backprop's 0 against
    autodiff's -5.6e-17 is a relative error of 1, :func:`~functional_nn.checking.
    _precision_check.within_spread`): the reference again at :data:`NUDGES` one-ulp nudges of
    every parameter (its compiled program: nothing compiles), the leaf's largest change times
    :data:`SPREAD_FACTOR` added to each entry's bar. Returns the description's note."""
    paths = leaf_paths(g_ref)
    failed = [i for i, r in enumerate(rows) if r.status == "fail" and r.method in redo
              and r.leaf in paths]  # fmt: skip
    if not failed:
        return ""
    u = float(jnp.finfo(dtype).eps)
    ref = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(g_ref)]
    spread = [0.0] * len(ref)
    for moved in nudged(params, u, key, NUDGES):
        again = jax.tree_util.tree_leaves(run_method(reference, moved, x, y)[1])
        for l, a in enumerate(again):
            change = np.abs(np.asarray(a, np.float64) - ref[l]).max(initial=0)
            spread[l] = max(spread[l], float(change))
    passed = []
    for i in failed:
        method, path = rows[i].method, rows[i].leaf
        l = paths.index(path)
        grads, kinks, tol, n_eval, seconds = redo[method]
        a = np.asarray(jax.tree_util.tree_leaves(grads)[l], np.float64)
        exclude = None if kinks is None else np.asarray(jax.tree_util.tree_leaves(kinks)[l])
        row = row_within(method, path, a, ref[l], np.full(a.shape, SPREAD_FACTOR * spread[l]),
                         tol, exclude, None, n_eval, seconds)  # fmt: skip
        if row.status != "fail":
            rows[i] = row
            passed.append(f"{method} {path}")
    judged = [f"{rows[i].method} {rows[i].leaf}" for i in failed]
    return judged_again("rows", "reference gradient", judged, passed, dtype)


def _check_options(methods, directional, k, key, dtype):
    """Check ``check_gradients``' options; return ``dtype`` as a name (or ``None``)."""
    where = "check_gradients"
    if methods is not None:
        if not isinstance(methods, Mapping):
            raise TypeError(
                f"{where}: methods must be a Mapping of name -> gradient method (such as "
                f"{{'backprop': backprop}}), or None for every built-in one; got "
                f"{type(methods).__name__} {methods!r:.60}"
            )
        for mname, method in methods.items():
            if not isinstance(mname, str):
                raise TypeError(f"{where}: methods' keys must be names (str); got {mname!r}")
            if not callable(method):
                raise TypeError(
                    f"{where}: methods[{mname!r}] must be a callable gradient method "
                    f"(net, loss, params, x, y) -> (J, grads); got {method!r:.60} "
                    f"({type(method).__name__}); the built-in ones are in default_methods()"
                )
    if directional is not None and not isinstance(directional, (bool, np.bool_)):
        raise TypeError(
            f"{where}: directional must be None (automatic), True or False; got "
            f"{directional!r:.60} ({type(directional).__name__})"
        )
    check_int(k, "k", where)
    if key is not None:
        check_key(key, "key", where)
    if dtype is None:
        return None
    try:
        resolved = jnp.dtype(dtype).name
    except TypeError:
        resolved = None
    if resolved not in TOLERANCES:
        raise ValueError(
            f"{where}: dtype must be 'float32', 'float64' or None (the params' own); got {dtype!r}"
        )
    return resolved


def _check_tolerances(tolerances, methods, reference) -> dict[str, float]:
    """``tolerances`` checked: a Mapping whose keys are the methods checked, ``"J"`` or
    ``"directional"``, and whose values are real bars >= 0."""
    where = "check_gradients"
    if tolerances is None:
        return {}
    if not isinstance(tolerances, Mapping):
        raise TypeError(
            f"{where}: tolerances must be a Mapping of name -> bar (such as "
            f"{{'backprop': 1e-6}}); got {type(tolerances).__name__} {tolerances!r:.60}"
        )
    known = [m for m in methods if m != reference] + ["J", "directional"]
    out = {}
    for name, bar in tolerances.items():
        if name not in known:
            raise ValueError(
                f"{where}: tolerances has the key {name!r}, which is not a method checked; "
                f"known keys: {known}"
            )
        out[name] = check_real(bar, f"tolerances[{name!r}]", where, 0.0, low_open=False)
    return out


def _directional_rows(net, loss, params, x, y, results, reduction, k, key, bars):
    r"""Every method's gradient along ``k`` random directions in each leaf against Richardson
    central differences of J (the checkers' engine, ReLU kinks detected): the error of a
    direction is what exceeds the reference's own bar, over :math:`\|g_{ref}\| \|v\|`."""
    key = jax.random.key(0) if key is None else key
    J = objective(net, loss, reduction)

    def pattern(p, x, y):
        return relu_pattern(net, p, x)

    lf = LeafFunction(J, params, (x, y), pattern)
    refs = LeafReferences(lf, jnp.dtype(jnp.result_type(*lf.leaves)).name, seed_words(key))
    start = time.perf_counter()
    per_leaf = []
    for l in range(len(lf.leaves)):
        d = refs.random(l, k)
        ref = refs.central(l, d)
        norms = np.linalg.norm(np.asarray(d.blocks, np.float64).reshape(k, -1), axis=1)
        per_leaf.append((l, d, ref, norms))
    seconds = time.perf_counter() - start
    scale = float(np.linalg.norm(flat_float64(
        results["autodiff" if "autodiff" in results else next(iter(results))][1]
    )))  # fmt: skip
    fd = np.concatenate([ref.value[:, 0] for _, _, ref, _ in per_leaf])
    bar = np.concatenate([ref.error[:, 0] for _, _, ref, _ in per_leaf])
    crossed = np.concatenate([ref.crossed for _, _, ref, _ in per_leaf])
    norms = np.concatenate([n for *_, n in per_leaf])
    rows = []
    for mname, (_, grads) in results.items():
        g_leaves = jax.tree_util.tree_leaves(grads)
        gv = np.concatenate([d.along(g_leaves[l]) for l, d, _, _ in per_leaf])
        keep = ~crossed
        diff = np.where(keep, np.maximum(np.abs(fd - gv) - bar, 0.0) / norms, 0.0)
        worst = int(np.argmax(diff))
        err = float(diff.max() / scale) if scale > 0 else float(diff.max() > 0) * np.inf
        tol = bars["directional"]
        status = "fail" if not err <= tol else ("kink" if crossed.any() else "pass")
        rows.append(CheckRow(
            mname, "directional", (fd.size,), err, float(np.abs(fd - gv).max()),
            float(np.abs(fd - gv)[worst] / max(abs(fd[worst]), abs(gv[worst]), 1e-300)),
            (worst,), float(gv[worst]), float(fd[worst]), tol, status, int(crossed.sum()),
            lf.evaluations, seconds,
        ))  # fmt: skip
    return rows
