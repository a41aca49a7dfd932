r"""``check_grad`` of a model whose leaves are sharded over several devices or processes,
without gathering a leaf onto one device or host.

A leaf is *sharded* when it is a ``jax.Array`` split over more than one device (not a
replica on each): the weights of a model that needs several hosts, placed by
``jax.make_array_from_callback`` or ``jax.device_put`` with a ``NamedSharding`` after
``jax.distributed.initialize``. The leaf-by-leaf checker reads entries on the host (and JAX
refuses to fetch an array that spans other processes' devices), so such a tree is checked here,
every array operation inside compiled programs and only scalars read back:

- The gradient is ``jax.jit(jax.grad(f))(params)`` (or ``grad``), left where XLA puts it.
- Each leaf is probed per *shard*: for every block of entries one device set holds
  (``sharding.devices_indices_map``), ``k`` random directions are drawn inside the program with
  the leaf's own sharding and set to 0 outside the block, so a failure is placed in a shard.
- Along each direction ``v`` the candidate is :math:`\langle g, v\rangle` and the reference
  the Richardson extrapolation of central differences of ``f`` in float64 (the leaves raised
  inside the program), :math:`(4 D(h) - D(2h)) / 3`, at
  :math:`h = 2^{-10} \max(1, \lVert\theta_{\mathrm{block}}\rVert_\infty) / \lVert v
  \rVert_\infty`; its error is bounded by :math:`|R - D(h)|` plus the rounding of ``f``
  (:math:`8 u_{64} \max|f| / h`), the candidate's by its own rounding (:math:`4 u\,
  \langle |g|, |v|\rangle`). Both read back as scalars: 4 evaluations of ``f`` per direction.
- Rows are judged as every ``grad`` row is, against the bar of the central reference; the
  description names, for a failing leaf, the shard of its worst direction (its rows, its
  devices and their processes).

Every process runs the same programs in the same order on the same (replicated) scalars, so
every process gets the same report. Not here (refused with the reason): ``pattern``,
``order=2``, ``baseline``, complex leaves; ``locate`` on failure (it reads units on the host).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._precision import x64
from functional_nn._util._validation import check_int
from functional_nn.checking._comparison import GradCheckReport, leaf_paths, n_leaves, row_within
from functional_nn.checking._tolerances import reference_bars

__all__ = ["direction", "is_sharded", "sharded_check_grad", "sharded_check_map"]


def is_sharded(tree: Any) -> bool:
    """Whether any leaf of ``tree`` is a ``jax.Array`` split over several devices (or held
    partly by other processes), rather than whole on one device or replicated."""
    for a in jax.tree_util.tree_leaves(tree):
        if isinstance(a, jax.Array) and not isinstance(a, jax.core.Tracer):
            s = a.sharding
            if not s.is_fully_addressable or (len(s.device_set) > 1 and not s.is_fully_replicated):
                return True
    return False


def _blocks(a: jax.Array) -> list[tuple[tuple[int, ...], tuple[int, ...], list]]:
    """``(lo, hi, devices)`` of each distinct block of entries the leaf's devices hold."""
    seen: dict[tuple, list] = {}
    for device, index in a.sharding.devices_indices_map(a.shape).items():
        bounds = tuple(s.indices(n)[:2] for s, n in zip(index, a.shape, strict=True))
        seen.setdefault(bounds, []).append(device)
    out = []
    for bounds in sorted(seen):
        lo = tuple(b[0] for b in bounds)
        hi = tuple(b[1] for b in bounds)
        out.append((lo, hi, sorted(seen[bounds], key=lambda d: d.id)))
    return out


def _factors(key, shape, lo, hi):
    keys = jax.random.split(key, len(shape) + 1)
    out = []
    for axis, n in enumerate(shape):
        i = jnp.arange(n)
        a = jnp.where((i >= lo[axis]) & (i < hi[axis]),
                      jax.random.normal(keys[axis], (n,), jnp.float64), 0.0)  # fmt: skip
        out.append(a.reshape((1,) * axis + (n,) + (1,) * (len(shape) - axis - 1)))
    scalar = jax.random.normal(keys[-1], (), jnp.float64) if not shape else 1.0
    return scalar, out


def direction(key, shape, lo, hi, fn=lambda a: a):
    r"""The direction ``v`` of one leaf and block, drawn inside a program: rank one, the outer
    product of one random vector per axis, each 0 outside the block's interval on its axis, so
    that ``v`` is never a leaf-sized buffer (XLA fuses the broadcast product into each single
    reduction; a program with two reductions would hold it). ``fn`` maps each factor
    (``jnp.abs``: :math:`|v|`)."""
    scalar, out = _factors(key, shape, lo, hi)
    v = fn(scalar)
    for a in out:
        v = v * fn(a)
    return v


def _dot_programs():
    r""":math:`\langle g, v\rangle` and :math:`\langle |g|, |v|\rangle`, one program each."""

    def cand(g_l, key, lo, hi):
        return jnp.sum(g_l.astype(jnp.float64) * direction(key, g_l.shape, lo, hi))

    def bound(g_l, key, lo, hi):
        size = direction(key, g_l.shape, lo, hi, jnp.abs)
        return jnp.sum(jnp.abs(g_l.astype(jnp.float64)) * size)

    return jax.jit(cand), jax.jit(bound)


def _programs(f: Callable, l: int, treedef):
    r"""``step``: :math:`h` for leaf ``l`` along :func:`direction`; ``value``: ``f`` in
    float64 at :math:`\theta + t v`, called once per ``t`` (one moved leaf alive at a time).
    ``aux``: arrays ``f`` takes after the tree (a cotangent), arguments of the program, not
    constants of it: a global array cannot be a constant (no process holds it whole)."""

    def step(theta, key, lo, hi):
        scalar, out = _factors(key, theta.shape, lo, hi)
        biggest = functools.reduce(jnp.multiply, [jnp.max(jnp.abs(a)) for a in out],
                                   jnp.abs(jnp.asarray(scalar, jnp.float64)))  # fmt: skip
        mask = functools.reduce(jnp.logical_and, [a != 0 for a in out], jnp.ones((), bool))
        size = jnp.max(jnp.abs(theta.astype(jnp.float64)) * mask)  # a product, not a select:
        # explicit sharding (jax 0.6) refuses a select of a replicated mask and a sharded leaf
        return 2.0**-10 * jnp.maximum(1.0, size) / biggest

    def value(leaves, aux, key, lo, hi, t):  # the leaves raised to float64 here, fused
        moved = [b.astype(jnp.float64) for b in leaves]
        moved[l] = moved[l] + t * direction(key, leaves[l].shape, lo, hi)
        return jnp.asarray(f(jax.tree_util.tree_unflatten(treedef, moved), *aux), jnp.float64)

    return jax.jit(step), jax.jit(value)


def sharded_check_grad(f: Callable, params: Any, grad: Callable | None, k: int, key,
                       where: str = "check_grad", **refused: Any) -> GradCheckReport:  # fmt: skip
    """:func:`~functional_nn.check_grad` of a tree with sharded leaves (module docstring);
    ``refused``: check_grad's ``pattern``, ``baseline`` (``None``) and ``order`` (1)."""
    for name, given in refused.items():
        if given is not None and not (name == "order" and given == 1):
            what = f"{name}={given}" if name == "order" else f"{name}="
            raise ValueError(f"{where}: {what} is not taken when leaves are sharded over "
                             "several devices")  # fmt: skip
    leaves, treedef = _checked_leaves(params, where)
    start = time.perf_counter()
    g_leaves = jax.tree_util.tree_leaves(jax.jit(grad if grad is not None else jax.grad(f))(params))
    seconds = time.perf_counter() - start
    candidate = _against(g_leaves, len(leaves), "the gradient", "params", where)
    return _judged(f, params, candidate, k, key, where, "grad", seconds)


def _against(g_leaves: list, n: int, what: str, tree: str, where: str) -> Callable:
    """The candidate of leaf ``l``: :math:`\\langle g_l, v\\rangle` and its bound, for a
    gradient (or a pulled-back cotangent) ``g_leaves`` of the ``n`` leaves."""
    if len(g_leaves) != n:
        raise ValueError(f"{where}: {what} has {len(g_leaves)} leaves; {tree} has {n}")

    def candidate(l: int):
        cand, bound = _dot_programs()
        return (lambda kj, lo, hi: cand(g_leaves[l], kj, lo, hi),
                lambda kj, lo, hi: bound(g_leaves[l], kj, lo, hi))  # fmt: skip

    return candidate


def sharded_check_map(kind: str, g: Callable, primals: Any, rule: Callable | None, k: int, key,
                      where: str) -> GradCheckReport:  # fmt: skip
    r"""``check_vjp`` (``kind="vjp"``) or ``check_jvp`` (``"jvp"``) of sharded primals: along
    one random cotangent ``w`` per output leaf, drawn inside a program with that output's
    sharding, the scalar :math:`\langle w, g(\theta)\rangle` is differenced as in
    ``check_grad``; the candidate is :math:`\langle \mathrm{vjp}(w), v\rangle` or
    :math:`\langle w, \mathrm{jvp}(v)\rangle`, ``v`` per leaf and shard as there."""
    leaves, treedef = _checked_leaves(primals, where)
    start = time.perf_counter()
    outs = jax.jit(g)(primals)
    out_leaves, out_def = jax.tree_util.tree_flatten(outs)
    w = []
    for i, o in enumerate(out_leaves):
        if not jnp.issubdtype(o.dtype, jnp.floating):
            raise ValueError(f"{where}: with sharded primals every output must be a real "
                             f"floating array; output {i} is {o.dtype}")  # fmt: skip
        draw = jax.jit(lambda kk, o=o: jax.random.normal(kk, o.shape, jnp.float64),
                       out_shardings=o.sharding)  # fmt: skip
        with x64(True):
            w.append(draw(jax.random.fold_in(jax.random.fold_in(key_or_default(key), 7), i)))
    cotangent = jax.tree_util.tree_unflatten(out_def, w)

    def f(p, w):
        return sum(jnp.sum(a * b.astype(jnp.float64))
                   for a, b in zip(w, jax.tree_util.tree_leaves(g(p)), strict=True))  # fmt: skip

    if kind == "vjp":
        ct = jax.tree_util.tree_map(lambda c, o: c.astype(o.dtype), cotangent, outs)
        pulled = rule(primals, ct) if rule is not None else jax.vjp(g, primals)[1](ct)[0]
        pulled_dot = _against(jax.tree_util.tree_leaves(pulled), len(leaves), "the vjp",
                              "primals", where)  # fmt: skip
        seconds = time.perf_counter() - start
        return _judged(f, primals, pulled_dot, k, key, where, "vjp", seconds, (w,))

    def candidate(l: int):
        def tangent_dot(leaves_, w, kj, lo, hi, absolute):
            v = direction(kj, leaves_[l].shape, lo, hi)
            tangents = [jnp.zeros_like(a) for a in leaves_]
            tangents[l] = v.astype(leaves_[l].dtype)
            p = jax.tree_util.tree_unflatten(treedef, leaves_)
            t = jax.tree_util.tree_unflatten(treedef, tangents)
            out_t = rule(p, t) if rule is not None else jax.jvp(g, (p,), (t,))[1]
            pairs = zip(w, jax.tree_util.tree_leaves(out_t), strict=True)
            if absolute:
                return sum(jnp.sum(jnp.abs(a) * jnp.abs(b.astype(jnp.float64))) for a, b in pairs)
            return sum(jnp.sum(a * b.astype(jnp.float64)) for a, b in pairs)

        cand = jax.jit(functools.partial(tangent_dot, absolute=False))
        bound = jax.jit(functools.partial(tangent_dot, absolute=True))
        return (lambda kj, lo, hi: cand(leaves, w, kj, lo, hi),
                lambda kj, lo, hi: bound(leaves, w, kj, lo, hi))  # fmt: skip

    seconds = time.perf_counter() - start
    return _judged(f, primals, candidate, k, key, where, "jvp", seconds, (w,))


def key_or_default(key):
    return jax.random.key(0) if key is None else key


def _checked_leaves(params: Any, where: str):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    for path, a in zip(leaf_paths(params), leaves, strict=True):
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            raise ValueError(f"{where}: leaf {path} is {jnp.result_type(a)}; with leaves sharded "
                             "over several devices every leaf must be a real floating array "
                             "(close over the others in f)")  # fmt: skip
    return leaves, treedef


def _judged(f, params, candidate, k, key, where, method, seconds, aux=()) -> GradCheckReport:
    """Rows per leaf: the candidate along each direction against float64 differences of ``f``."""
    k = check_int(k, "k", where)
    key = key_or_default(key)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    paths = leaf_paths(params)
    dtype = str(jnp.result_type(*leaves))
    bar = reference_bars("float64" if dtype == "float64" else "float32")["central"]
    u = float(jnp.finfo(dtype).eps)
    u64 = float(np.finfo(np.float64).eps)
    rows, notes, evaluations = [], [], 0
    with x64(True):
        for l in range(len(leaves)):
            blocks = _blocks(leaves[l])
            step_of, value_at = _programs(f, l, treedef)
            cand_of, bound_of = candidate(l)
            cand, ref, err, owner = [], [], [], []
            for s, (lo, hi, _) in enumerate(blocks):
                for j in range(k):
                    kj = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, l), s), j)
                    lo_, hi_ = np.asarray(lo), np.asarray(hi)
                    h = float(step_of(leaves[l], kj, lo_, hi_))
                    c, c_abs = float(cand_of(kj, lo_, hi_)), float(bound_of(kj, lo_, hi_))
                    vals = np.array([float(value_at(leaves, aux, kj, lo_, hi_, t))
                                     for t in (2 * h, h, -h, -2 * h)])  # fmt: skip
                    if not np.isfinite([h, c, c_abs, *vals]).all():
                        raise ValueError(f"{where}: leaf {paths[l]}, its derivative or f along "
                                         f"a direction of it is not finite (step {h:g}, "
                                         f"candidate {c:g}, f = {vals.tolist()})")  # fmt: skip
                    d1 = (vals[1] - vals[2]) / (2 * h)
                    d2 = (vals[0] - vals[3]) / (4 * h)
                    r = (4 * d1 - d2) / 3
                    cand.append(c)
                    ref.append(r)
                    err.append(abs(r - d1) + 8 * u64 * np.abs(vals).max() / h
                               + 4 * u * c_abs)  # fmt: skip
                    owner.append(s)
                    evaluations += 4
            cand_, ref_, err_ = (np.asarray(a) for a in (cand, ref, err))
            row = row_within(method, paths[l], cand_, ref_, err_, bar, None, (len(cand),),
                             4 * len(cand), seconds)  # fmt: skip
            rows.append(row)
            if row.status == "fail":
                s = owner[int(np.argmax(np.abs(cand_ - ref_) - err_))]
                lo, hi, devices = blocks[s]
                span = ", ".join(f"{a}:{b}" for a, b in zip(lo, hi, strict=True))
                procs = ", ".join(str(p) for p in sorted({d.process_index for d in devices}))
                notes.append(f"{paths[l]}: worst in shard {s + 1} of {len(blocks)} ([{span}] on "
                             f"devices {[d.id for d in devices]}, process {procs})")  # fmt: skip
    P = sum(int(np.size(a)) for a in leaves)
    description = (
        f"{where}: P={P}, {n_leaves(len(leaves))}, sharded over "
        f"{len({d for a in leaves for d in a.sharding.device_set})} devices in "
        f"{jax.process_count()} processes: {k} directions per shard drawn with each leaf's "
        f"sharding, reference central (float64) inside the program, only scalars read; "
        f"{evaluations} evaluations"
    )
    if method != "grad":
        description += "; along one random cotangent per output (drawn with its sharding)"
    if notes:
        description += "; " + "; ".join(notes)
    return GradCheckReport(rows, "central (float64)", description, dtype)
