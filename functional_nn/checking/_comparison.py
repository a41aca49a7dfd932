r"""Comparing gradients leaf by leaf, and the report every check returns.

The error of a leaf ``a`` against a reference ``b`` is **normwise**,

.. math:: e = \frac{\max_i |a_i - b_i|}{\max(\max_i |a_i|, \max_i |b_i|)},

so that an entry that cancels to nearly zero does not dominate (its own relative error can be
large while the gradient is right). Beside it each comparison reports the maximum absolute
error and the worst **elementwise** relative error :math:`|a_i - b_i| / \max(|a_i|, |b_i|)`,
with the index where it occurs and both values there. Bars (:data:`~functional_nn.TOLERANCES`,
docs/checking.md) apply to ``e``.

Comparisons run on the host in float64 (or complex128): this is a check, not a hot path.

Every front door (:func:`~functional_nn.check_gradients` for networks,
:func:`~functional_nn.check_grad` and :func:`~functional_nn.check_vjp` for any function)
returns a :class:`GradCheckReport`: one :class:`CheckRow` per check and leaf, ``str`` a table,
``.to_json()`` the same as data, ``.raise_if_failed()`` a :class:`GradientMismatch`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np


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


def compare_leaf(path: str, a, b, exclude=None, scale=None) -> LeafComparison:
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
        scale: ``"leaf"`` (the default): the normwise denominator is the leaf's own largest
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
        compare_leaf(jax.tree_util.keystr(path), la, lb, m, whole)
        for (path, la), (_, lb), m in zip(leaves_a, leaves_b, masks, strict=True)
    ]


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


class TaylorLadder(NamedTuple):
    r"""The Taylor remainder test of one leaf, as :meth:`GradCheckReport.plot` draws it.

    Attributes:
        h: the steps of the ladder, largest first.
        r: the remainder :math:`\max_\pm |f(\theta \pm h v) - f(\theta) \mp h \langle g, v
            \rangle|` at each step.
        floor: the rounding floor: remainders under it are rounding, not Taylor.
        fit: which points the slope was fitted to (the smallest steps above ``floor``).
        order: the fitted slope (2 for a right gradient, 1 for a wrong one; nan: no fit).
        status: the row's status (``pass``, ``fail``, ``kink``, ``skip``).
    """

    h: np.ndarray
    r: np.ndarray
    floor: float
    fit: np.ndarray
    order: float
    status: str


class GradientMismatch(AssertionError):  # noqa: N818 -- the public name since 0.1
    """A gradient method disagrees with the reference beyond its tolerance."""


@dataclass
class GradCheckReport:
    """Every method against the reference, leaf by leaf; ``str()`` is a readable table.

    Attributes:
        rows: one :class:`CheckRow` per method and leaf.
        reference: the name of the reference method.
        description: the network and data checked.
        dtype: the dtype of the parameters.
        taylor: the Taylor ladder of each leaf (path -> :class:`TaylorLadder`), kept by
            :func:`~functional_nn.check_grad`; empty for the other checks.
        located: for a failing ``check_grad``, ``check_vjp`` or ``check_jvp``, the
            :class:`~functional_nn.LocateReport` of :func:`~functional_nn.locate` on the
            function (which rule, which argument, which line); ``None`` otherwise.
    """

    rows: list[CheckRow]
    reference: str
    description: str = ""
    dtype: str = ""
    taylor: dict[str, TaylorLadder] = field(default_factory=dict)
    located: Any = None

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
            "located": None if self.located is None else json.loads(self.located.to_json()),
            "taylor": {
                path: {**t._asdict(), "h": t.h.tolist(), "r": t.r.tolist(), "fit": t.fit.tolist()}
                for path, t in self.taylor.items()
            },
        }
        return json.dumps(payload, **kw)

    def plot(self, leaves=None, ax=None):
        """The Taylor remainder test drawn: per leaf, the remainder against the step on
        log-log axes, the fitted slope, slope-1 and slope-2 guides, failing leaves marked
        (:func:`~functional_nn.checking._taylor_plot.plot_taylor`; needs matplotlib, which is
        imported only here: ``pip install "functional_nn[plot]"``).

        Args:
            leaves: the paths to draw (default: every leaf with a ladder).
            ax: a matplotlib ``Axes`` to draw every leaf on (default: a new figure).

        Returns:
            the matplotlib ``Figure``.
        """
        from functional_nn.checking._taylor_plot import plot_taylor

        return plot_taylor(self, leaves, ax)

    def __str__(self) -> str:
        head = ("method", "leaf", "error", "tol", "worst rel at index: value vs reference",
                "evals", "seconds", "status")  # fmt: skip
        lines = []
        for r in self.rows:
            where = list(r.index) if r.index else "()"  # () for a 0-d leaf: its one entry
            one = isinstance(r.value, (int, float, complex, np.number))  # a 0-d leaf's entry
            shown = r.index or r.leaf in ("J", "directional") or one
            at = (
                f"{r.max_rel:.1e} at {where}: {_fmt(r.value)} vs {_fmt(r.reference_value)}"
                if shown
                else "-"
            )
            if r.method == "taylor":  # the observed order of the remainder, 2 when right
                at = f"observed order {_fmt(r.value)} (right: 2, wrong: 1)"
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
        body = [fmt.format(*head).rstrip()] + [fmt.format(*line).rstrip() for line in lines]
        return "\n".join([title, *body, verdict, *_located_lines(self.located)])

    def raise_if_failed(self) -> GradCheckReport:
        """Raise :class:`GradientMismatch` with the table if any row failed; else ``self``."""
        if not self.ok:
            failed = ", ".join(f"{r.method} {r.leaf}" for r in self.failures)
            raise GradientMismatch(f"gradients disagree ({failed}):\n{self}")
        return self


def _located_lines(located) -> list[str]:
    """What a failing report says of :func:`~functional_nn.locate`'s answer."""
    if located is None:
        return []
    if located.ok:
        return [f"located: no culprit among the units ({located.description})"]
    return ["located (the rule whose derivative is wrong at these values):",
            *(f"  {c}" for c in located.culprits)]  # fmt: skip


def n_leaves(n: int) -> str:
    """``"1 leaf"``, ``"2 leaves"``: the count a description writes."""
    return f"{n} leaf" if n == 1 else f"{n} leaves"


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


def leaf_row(method, c: LeafComparison, tol, kinks=0, evaluations=None, seconds=0.0) -> CheckRow:
    """A report row from a comparison: ``fail`` above the bar (or nan), ``kink`` when
    entries were left out, ``pass`` otherwise."""
    status = "fail" if not c.normwise <= tol else ("kink" if kinks else "pass")
    return CheckRow(
        method, c.path, c.shape, c.normwise, c.max_abs, c.max_rel, c.index, c.a_value,
        c.b_value, tol, status, kinks, evaluations, seconds,
    )  # fmt: skip


def row_within(
    method, path, a, ref, err, tol, exclude=None, shape=None, evaluations=None, seconds=0.0
) -> CheckRow:
    """A report row for ``a`` against a reference ``ref`` known to within ``err`` (entry by
    entry, same shape; 0 for an exact reference): the normwise error counts only what exceeds
    ``err``, ``max|a - ref| - err`` over the leaf's largest entry, so a reference's own
    truncation and rounding never fail a right ``a``. ``exclude``: entries left out (kinks);
    ``shape``: the shape to report (default ``a``'s)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    err = np.broadcast_to(np.asarray(err, np.float64), a.shape)
    keep = np.ones(a.shape, bool) if exclude is None else ~np.asarray(exclude, bool)
    c = compare_leaf(path, a, ref, None if exclude is None else ~keep)
    if a.size and keep.any():
        excess = np.where(keep, np.maximum(np.abs(a - ref) - err, 0.0), 0.0)
        excess = np.where(keep & np.isnan(a - ref), np.inf, excess)
        scale = max(np.abs(np.where(keep, a, 0)).max(), np.abs(np.where(keep, ref, 0)).max())
        worst = excess.max()
        c = c._replace(normwise=0.0 if worst == 0 else (worst / scale if scale > 0 else np.inf))
    if shape is not None:
        c = c._replace(shape=tuple(shape))
    kinks = 0 if exclude is None else int(np.sum(~keep))
    return leaf_row(method, c, tol, kinks, evaluations, seconds)


def leaf_paths(tree) -> list[str]:
    """The path of every leaf, in tree order: ``["['W']", "['b']"]``; ``"(root)"`` for a tree
    that is one array."""
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [jax.tree_util.keystr(p) or "(root)" for p, _ in paths]
