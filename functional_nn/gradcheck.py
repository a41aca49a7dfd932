r"""Comparing gradients leaf by leaf.

The error of a leaf ``a`` against a reference ``b`` is **normwise**,

.. math:: e = \frac{\max_i |a_i - b_i|}{\max(\max_i |a_i|, \max_i |b_i|)},

so that an entry that cancels to nearly zero does not dominate (its own relative error can be
large while the gradient is right). Beside it each comparison reports the maximum absolute
error and the worst **elementwise** relative error :math:`|a_i - b_i| / \max(|a_i|, |b_i|)`,
with the index where it occurs and both values there. Bars (DESIGN.md) apply to ``e``.

Comparisons run on the host in float64 (or complex128): this is a check, not a hot path.
"""

from __future__ import annotations

import functools
import inspect
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn.backprop import autodiff, backprop, jacobian_chain, objective
from functional_nn.finite_differences import (
    _ravel,
    default_eps,
    finite_differences,
    local_finite_differences,
    relu_pattern,
)
from functional_nn.network import num_params

__all__ = [
    "DIRECTIONAL_ABOVE",
    "TOLERANCES",
    "CheckRow",
    "GradCheckReport",
    "GradientMismatch",
    "LeafComparison",
    "check_gradients",
    "compare_gradients",
    "complex_step",
    "default_methods",
    "directional_derivatives",
]


class LeafComparison(NamedTuple):
    """How one leaf of a gradient differs from the same leaf of a reference.

    Attributes:
        path: the leaf's path in the tree, e.g. ``"[1].W"`` (layer 2's weights).
        shape: the leaf's shape.
        normwise: ``max|a - b| / max(max|a|, max|b|)``; 0 when both are all zeros.
        max_abs: ``max|a - b|``.
        max_rel: worst elementwise ``|a_i - b_i| / max(|a_i|, |b_i|)`` (0 where both are 0).
        index: where ``max_rel`` occurs, a tuple of ints.
        a_value, b_value: both values at ``index``.
    """

    path: str
    shape: tuple[int, ...]
    normwise: float
    max_abs: float
    max_rel: float
    index: tuple[int, ...]
    a_value: Any
    b_value: Any


def _compare_leaf(path: str, a, b, exclude=None, scale=None) -> LeafComparison:
    """Compare one leaf; entries where ``exclude`` is true (kinks) are left out of the errors
    (but the reference's magnitude there still sets the scale). ``scale`` replaces the
    leaf's own magnitude as the normwise denominator when given."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"compare_gradients: leaf {path} has shape {a.shape} in a but {b.shape} in b"
        )
    kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
    a, b = a.astype(kind), b.astype(kind)
    keep = np.ones(a.shape, bool) if exclude is None else ~np.asarray(exclude, bool)
    if a.size == 0 or not keep.any():
        return LeafComparison(path, a.shape, 0.0, 0.0, 0.0, (), None, None)
    diff = np.where(keep, np.abs(a - b), 0.0)
    diff = np.where(keep & np.isnan(a - b), np.inf, diff)  # a nan is the worst error
    if scale is None:
        scale = max(np.abs(b).max(), np.where(keep, np.abs(a), 0).max())
    if not np.isfinite(scale):
        scale = np.inf
    with np.errstate(invalid="ignore", divide="ignore"):
        if diff.max() == 0:
            normwise = 0.0
        elif np.isinf(diff.max()) or not np.isfinite(scale):
            normwise = np.inf
        else:
            normwise = diff.max() / scale if scale > 0 else np.inf
        denom = np.maximum(np.abs(a), np.abs(b))
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1), 0.0)
    rel = np.where(np.isinf(diff), np.inf, rel)
    flat = int(np.argmax(rel))
    index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
    return LeafComparison(
        path,
        a.shape,
        float(normwise),
        float(diff.max()),
        float(rel.flat[flat]),
        index,
        a[index].item(),
        b[index].item(),
    )


def compare_gradients(
    a: Any, b: Any, exclude: Any = None, scale: str = "leaf"
) -> list[LeafComparison]:
    """Compare two gradient pytrees of the same structure, leaf by leaf.

    Args:
        a: a gradient (any pytree of arrays, e.g. a tuple of :class:`~functional_nn.Layer`).
        b: the reference, with the same tree structure and leaf shapes.
        exclude: optional boolean pytree like ``a``: entries left out of the errors (the
            kinks of a finite-difference estimate).
        scale: ``"leaf"`` (DESIGN.md): the normwise denominator is the leaf's own largest
            entry; ``"gradient"``: the largest entry of the whole reference gradient, for
            estimates whose error is absolute and the same in every leaf (differences of J).

    Returns:
        one :class:`LeafComparison` per leaf, in tree order.

    Raises:
        TypeError: the two trees differ in structure; both structures are printed.
        ValueError: a leaf differs in shape.

    >>> import jax.numpy as jnp
    >>> from functional_nn import Layer
    >>> g = (Layer(jnp.array([[1.0, 2.0]]), None),)
    >>> [(c.path, c.normwise) for c in compare_gradients(g, g)]
    [('[0].W', 0.0)]
    """
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
    if tree_a != tree_b:
        raise TypeError(
            "compare_gradients: the two gradients have different tree structures:\n"
            f"  a: {tree_a}\n  b: {tree_b}"
        )
    masks = [None] * len(leaves_a)
    if exclude is not None:
        masks = [m for _, m in jax.tree_util.tree_flatten_with_path(exclude)[0]]
        if len(masks) != len(leaves_a):
            raise TypeError("compare_gradients: exclude must have the structure of a")
    if scale not in ("leaf", "gradient"):
        raise ValueError(f"compare_gradients: scale must be 'leaf' or 'gradient'; got {scale!r}")
    whole = None
    if scale == "gradient":
        whole = max((float(np.abs(np.asarray(lb)).max(initial=0)) for _, lb in leaves_b), default=0)
    return [
        _compare_leaf(jax.tree_util.keystr(path), la, lb, m, whole)
        for (path, la), (_, lb), m in zip(leaves_a, leaves_b, masks, strict=True)
    ]


# -- checking every gradient method of a network ------------------------------------------------

TOLERANCES = {
    "float64": {
        "jacobian_chain": 1e-12,
        "backprop": 1e-12,
        "autodiff": 1e-12,
        "sympy": 1e-12,
        "complex_step": 1e-13,
        "finite_differences": 1e-7,
        "local_finite_differences": 1e-7,
        "directional": 1e-6,
        "J": 1e-12,
    },
    "float32": {
        "jacobian_chain": 1e-5,
        "backprop": 1e-5,
        "autodiff": 1e-5,
        "sympy": 1e-5,
        "complex_step": 1e-5,
        "finite_differences": 1e-2,
        "local_finite_differences": 1e-2,
        "directional": 1e-2,
        "J": 1e-5,
    },
}
"""Normwise bars per method and dtype (DESIGN.md). A method of another name gets the bar of
the hand-written methods (``backprop``) unless ``check_gradients(tolerances=...)`` says more.
Finite differences (central, away from kinks), the local chain and the directional check have
the bars their truncation and rounding errors allow; ``"J"`` bars the loss value itself."""

DIRECTIONAL_ABOVE = 10_000
"""Above this many parameters, :func:`check_gradients` replaces the finite-difference methods
(2P evaluations and more) by the directional check (2k evaluations)."""

FINITE_DIFFERENCE_METHODS = ("finite_differences", "complex_step", "local_finite_differences")

GRADIENT_SCALED = ("finite_differences",)
"""Methods whose error is measured against the whole gradient's largest entry, not each
leaf's. A difference quotient of J has an absolute rounding error of about ``u |J| / h`` in
every entry alike, so a leaf whose gradient is small beside the rest (the first layers of a
deep sigmoid network, 1e-4 of the last in the validation suite) cannot meet a per-leaf
relative bar however right it is: there, central differences reach 3e-8 relative at best,
at a step 50 times the default. The complex step subtracts nothing and the local chain
differences O(1) layer functions, so both keep the per-leaf bar."""


def complex_step(net, loss, params, x, y, reduction="sum", *, return_info=False):
    """Complex-step differences of the objective: :func:`finite_differences` with
    ``scheme="complex_step"`` (P evaluations, error near machine precision)."""
    return finite_differences(
        net, loss, params, x, y, reduction, scheme="complex_step", return_info=return_info
    )


def default_methods() -> dict[str, Callable]:
    """Every built-in gradient method by name (the reference ``autodiff`` apart)."""
    return {
        "jacobian_chain": jacobian_chain,
        "backprop": backprop,
        "finite_differences": finite_differences,
        "complex_step": complex_step,
        "local_finite_differences": local_finite_differences,
    }


class CheckRow(NamedTuple):
    """One line of a :class:`GradCheckReport`: one method, one leaf (or ``J``).

    Attributes:
        method: the method's name; leaf: the leaf's path (``"[0].W"``), ``"J"`` for the loss
            value or ``"directional"`` for the directional check.
        error: the normwise error against the reference (kink entries left out).
        max_abs, max_rel, index, value, reference_value: see :class:`LeafComparison`.
        tolerance: the bar applied; status: ``"pass"``, ``"fail"`` or ``"kink"`` (passes away
            from kinks, and ``kinks`` entries were left out since their step crossed one).
        kinks: number of entries left out; evaluations: evaluations of J the method made (1
            for a method that does not report them: one evaluation of J with its gradient);
            seconds: wall time of one jitted call after a warm-up call.
    """

    method: str
    leaf: str
    shape: tuple[int, ...]
    error: float
    max_abs: float
    max_rel: float
    index: tuple[int, ...]
    value: Any
    reference_value: Any
    tolerance: float
    status: str
    kinks: int
    evaluations: int | None
    seconds: float


class GradientMismatch(AssertionError):  # noqa: N818 -- the public name (DESIGN.md)
    """A gradient method disagrees with the reference beyond its tolerance."""


@dataclass
class GradCheckReport:
    """Every method against the reference, leaf by leaf; ``str()`` is a readable table.

    Attributes:
        rows: one :class:`CheckRow` per method and leaf.
        reference: the name of the reference method.
        description: the network and data checked.
        dtype: the dtype of the parameters.
    """

    rows: list[CheckRow]
    reference: str
    description: str = ""
    dtype: str = ""

    @property
    def ok(self) -> bool:
        """No row failed (kinks are reported, not failed)."""
        return all(r.status != "fail" for r in self.rows)

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "fail"]

    def worst(self) -> dict[str, CheckRow]:
        """Per method, the row with the largest ``error / tolerance``."""
        out: dict[str, CheckRow] = {}
        for r in self.rows:
            if (
                r.method not in out
                or r.error / r.tolerance > out[r.method].error / out[r.method].tolerance
            ):
                out[r.method] = r
        return out

    def as_dicts(self) -> list[dict]:
        """The rows as JSON-ready dicts."""
        return [
            {
                **r._asdict(),
                "shape": list(r.shape),
                "index": list(r.index),
                "value": _jsonable(r.value),
                "reference_value": _jsonable(r.reference_value),
            }
            for r in self.rows
        ]

    def to_json(self, **kw) -> str:
        payload = {
            "description": self.description,
            "dtype": self.dtype,
            "reference": self.reference,
            "ok": self.ok,
            "rows": self.as_dicts(),
        }
        return json.dumps(payload, **kw)

    def __str__(self) -> str:
        head = ("method", "leaf", "error", "tol", "worst rel at index: value vs reference",
                "evals", "seconds", "status")  # fmt: skip
        lines = []
        for r in self.rows:
            at = (
                f"{r.max_rel:.1e} at {list(r.index)}: {_fmt(r.value)} vs {_fmt(r.reference_value)}"
                if r.index or r.leaf in ("J", "directional")
                else "-"
            )
            status = r.status + (f" ({r.kinks} left out)" if r.kinks else "")
            lines.append(
                (
                    r.method,
                    r.leaf,
                    f"{r.error:.2e}",
                    f"{r.tolerance:.0e}",
                    at,
                    "-" if r.evaluations is None else str(r.evaluations),
                    f"{r.seconds:.4f}",
                    status,
                )  # fmt: skip
            )
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        title = f"gradient check against {self.reference!r}"
        if self.description:
            title += f": {self.description}"
        verdict = "OK" if self.ok else f"{len(self.failures)} FAILED"
        body = [fmt.format(*head)] + [fmt.format(*line) for line in lines]
        return "\n".join([title, *body, verdict])

    def raise_if_failed(self) -> GradCheckReport:
        """Raise :class:`GradientMismatch` with the table if any row failed; else ``self``."""
        if not self.ok:
            failed = ", ".join(f"{r.method} {r.leaf}" for r in self.failures)
            raise GradientMismatch(f"gradients disagree ({failed}):\n{self}")
        return self


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, complex):
        return f"{v.real:.6g}{v.imag:+.2g}j"
    return f"{v:.6g}"


def _jsonable(v):
    if isinstance(v, complex):
        return [v.real, v.imag]
    return v


@functools.lru_cache(maxsize=256)
def _jitted(method, net, loss, reduction: str, info: bool):
    """One compiled function per method, network, loss and reduction, reused across calls."""
    kw = {} if reduction == "sum" else {"reduction": reduction}
    if info:
        kw["return_info"] = True
    return jax.jit(functools.partial(method, net, loss, **kw))


def _call(method, net, loss, params, x, y, reduction):
    """Run a method jitted (warm-up, then one timed call); return J, grads, evaluations, kinks,
    seconds."""
    info = "return_info" in inspect.signature(method).parameters
    try:
        f = _jitted(method, net, loss, reduction, info)
    except TypeError:  # an unhashable method or loss: compile afresh
        f = _jitted.__wrapped__(method, net, loss, reduction, info)
    jax.block_until_ready(f(params, x, y))
    start = time.perf_counter()
    out = jax.block_until_ready(f(params, x, y))
    seconds = time.perf_counter() - start
    if info:
        (J, grads), evaluations, kinks = out
        return J, grads, int(evaluations), kinks, seconds
    J, grads = out
    return J, grads, 1, None, seconds


def _directions(params, k: int, key) -> jax.Array:
    """``k`` random unit directions in the flattened parameter space, ``(k, P)``."""
    P = num_params(params)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    v = jax.random.normal(key, (k, P), dtype)
    return v / jnp.linalg.norm(v, axis=1, keepdims=True)


def directional_derivatives(net, loss, params, x, y, v, reduction="sum", eps=None):
    """Central differences of J along each row of ``v`` (``(k, P)`` unit vectors): ``2k``
    evaluations, whatever ``P``; and whether each step crossed a ReLU kink.

    The step is :math:`h = \\epsilon \\max(1, \\max_i |\\theta_i|)`, ``eps`` defaulting to the
    central scheme's :math:`u^{1/3}`.
    """
    theta, unravel = _ravel(params)
    eps = default_eps("central", theta.dtype) if eps is None else eps
    h = eps * jnp.maximum(1, jnp.max(jnp.abs(theta)))
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
    """Check gradient methods against a reference, leaf by leaf, with the DESIGN.md bars.

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
            compared along ``k`` random unit directions ``v``: central differences of J
            against ``g . v``, error ``max_k |fd_k - g . v_k| / ||g_ref||``.
        k: number of directions; key: PRNG key for them (default ``jax.random.key(0)``).
        dtype: the precision the check must run in (``"float64"`` or ``"float32"``); the
            parameters must have it. Asking for float64 while x64 is off is an error that
            says how to turn it on, never a silent float32 check.

    Returns:
        :class:`GradCheckReport`.
    """
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
    bars = {**TOLERANCES[name], **(tolerances or {})}
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

    J_ref, g_ref, _, _, _ = _call(reference_method, net, loss, params, x, y, reduction)
    rows: list[CheckRow] = []
    results = {reference: (J_ref, g_ref)}
    for mname, method in methods.items():
        J, grads, n_eval, kinks, seconds = _call(method, net, loss, params, x, y, reduction)
        results[mname] = (J, grads)
        tol = bars.get(mname, bars["backprop"])
        scale = "gradient" if mname in GRADIENT_SCALED else "leaf"
        comparisons = compare_gradients(grads, g_ref, exclude=kinks, scale=scale)
        kink_counts = (
            [int(np.sum(np.asarray(kk))) for kk in jax.tree_util.tree_leaves(kinks)]
            if kinks is not None
            else [0] * len(comparisons)
        )
        j = _compare_leaf("J", J, J_ref)
        rows.append(_row(mname, j, bars["J"], 0, n_eval, seconds))
        for c, n_kinks in zip(comparisons, kink_counts, strict=True):
            rows.append(_row(mname, c, tol, n_kinks, n_eval, seconds))

    if directional:
        key = jax.random.key(0) if key is None else key
        v = _directions(params, k, key)
        f = jax.jit(functools.partial(directional_derivatives, net, loss, reduction=reduction))
        jax.block_until_ready(f(params, x, y, v))  # warm-up: compile
        start = time.perf_counter()
        fd, crossed = jax.block_until_ready(f(params, x, y, v))
        seconds = time.perf_counter() - start
        fd, crossed = np.asarray(fd), np.asarray(crossed)
        scale = float(np.linalg.norm(_flat(g_ref)))
        for mname, (_, grads) in results.items():
            gv = np.asarray(v) @ _flat(grads)
            keep = ~crossed
            diff = np.where(keep, np.abs(fd - gv), 0.0)
            worst = int(np.argmax(diff))
            err = float(diff.max() / scale) if scale > 0 else float(diff.max() > 0) * np.inf
            tol = bars["directional"]
            status = "fail" if not err <= tol else ("kink" if crossed.any() else "pass")
            rows.append(
                CheckRow(
                    mname,
                    "directional",
                    (k,),
                    err,
                    float(diff.max()),
                    float(diff[worst] / max(abs(fd[worst]), abs(gv[worst]), 1e-300)),
                    (worst,),
                    float(gv[worst]),
                    float(fd[worst]),
                    tol,
                    status,
                    int(crossed.sum()),
                    2 * k,
                    seconds,
                )  # fmt: skip
            )
    description = (
        f"sizes={net.sizes} hidden={net.hidden} output={net.output} bias={net.bias} "
        f"loss={getattr(loss, 'name', loss)} N={x.shape[0] if jnp.ndim(x) == 2 else 1} P={P}"
    )
    return GradCheckReport(rows, reference, description, name)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])


def _row(method, c: LeafComparison, tol, kinks, evaluations, seconds) -> CheckRow:
    status = "fail" if not c.normwise <= tol else ("kink" if kinks else "pass")
    return CheckRow(
        method, c.path, c.shape, c.normwise, c.max_abs, c.max_rel, c.index, c.a_value,
        c.b_value, tol, status, kinks, evaluations, seconds,
    )  # fmt: skip
