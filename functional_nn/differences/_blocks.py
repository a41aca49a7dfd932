r"""Evaluations of any function of any pytree with one leaf moved, in batches sized by memory.

The checkers differentiate along directions that are *blocks of one leaf*: a direction for
leaf :math:`l` has that leaf's shape, and ``f`` is evaluated at ``params`` with only that leaf
moved, :math:`\theta_l + t\, s\, v`. Nothing of the size of the whole tree is made per
direction, on the host or on the device: the cost of a check grows with the number of leaves
and the cost of one evaluation of ``f``, never with leaves times parameters.

The points of a leaf (directions times steps) are evaluated in chunks: a :func:`jax.vmap` of
``f`` over the moved leaf, the other leaves unbatched, so that only what depends on the moved
leaf is computed per point. The chunk size is :data:`CHUNK`, or the power of two below it that
a memory budget (``budget_bytes``) holds, from an estimate of one point's memory (the moved leaf
and the largest intermediate of ``f``, read from its jaxpr); the last chunk is padded, so every
chunk of a leaf has one shape.

A leaf's chunks run as one compiled program, or eagerly op by op, by what the leaf shares
with the others (:data:`SHARED_SHAPES`). A leaf whose shape and dtype at least that many leaves
have (the layers of a deep MLP, a transformer's blocks) runs op by op, as
:func:`jax.test_util.check_grads` runs: each primitive is compiled once per shape and reused
by every leaf of the same shape and every later call, where one program per leaf would compile
the whole of ``f`` once per leaf (5 s for the 32 leaves of a 1M-parameter MLP on 2 cores,
against 1.4 s op by op with 16 directions each). Any other leaf's chunk program is compiled
whole, once: op by op, each of its primitives would be a program of its own (every ``add``,
``broadcast_in_dim`` and ``convert_element_type`` of a new shape: 1,960 of the 3,589 programs
that tests/checking/test_check_grad.py, test_screen.py, test_locate.py and
test_research_models.py compiled cold, ``JAX_LOG_COMPILES=1``). A whole program is kept by its
structure (:func:`~functional_nn._compile.shared_program`), so a later check of the same
computation compiles nothing again, as the ops run one by one would not. The points of a
leaf are traced once per chunk size and reused by every later call on that leaf (the ladder,
the directions, a retry): tracing was a third of a cold check of a 32-leaf MLP. Evaluations run
where the parameters live; only ``f``'s outputs come back to the host, in float64 (or
complex128), so a float32 ``f`` loses nothing more in the differences.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._compile import shared_program

CHUNK = 16
"""Points per chunk where the budget allows: large enough that a chunk's arithmetic
outweighs launching its ops, small enough that ladders (24 points) and ``k = 16`` directions
split into whole chunks."""

PAD_BYTES = 2**20
"""A chunk of :data:`CHUNK` points that moves and computes at most this many bytes is cheap:
such chunks have one size whatever the number of points, the last padded (a check of a
small ``f`` compiled 25% fewer programs: ``JAX_LOG_COMPILES=1``, test_check_grad.py and
test_check_vjp.py, 1,560 before, 1,162 after)."""

SHARED_SHAPES = 3
"""A leaf whose shape and dtype this many leaves have (itself included) runs op by op; any
other leaf's chunk program is compiled whole (the module's docstring). Measured on 2 cores,
cold (``JAX_LOG_COMPILES=1``): tests/checking/test_check_grad.py and test_screen.py compiled
1,989 programs with every chunk op by op, 1,331 with this rule and programs shared by
structure (:func:`~functional_nn._compile.shared_program`)."""

DEFAULT_BUDGET = 256 * 2**20
"""Bytes of memory one chunk of evaluations may use (the default of the checkers'
``memory_budget``): a laptop's share, and on a GPU small beside its memory."""


class ComplexRefusedError(Exception):
    """``f`` traced at complex points and then failed to run there (a Pallas kernel, which
    has no complex buffers; a host callback that refuses complex arrays): the complex step
    cannot serve that leaf. :attr:`LeafFunction.refused` keeps the reason."""


class LeafFunction:
    """``f(params, *args)`` (any pytree of arrays out, raveled to ``(m,)``) with one leaf moved.

    Attributes:
        leaves, treedef: the parameters' leaves (as given: device arrays stay on their device)
            and structure.
        m: the number of outputs; out_dtype: their dtype.
        pattern: optional ``(params, *args) -> bool array``: whether a point changed it.
        evaluations: evaluations of ``f`` made so far (padding excluded).
        progress: optional ``(evaluations, leaf) -> None``, called after every chunk.
        refused: ``{leaf: reason}`` for the leaves whose complex evaluation traced but
            failed to run (:class:`ComplexRefusedError`): :meth:`accepts_complex` says no for them.
    """

    def __init__(
        self,
        f: Callable,
        params: Any,
        args: tuple = (),
        pattern: Callable | None = None,
        budget_bytes: int = DEFAULT_BUDGET,
        progress: Callable | None = None,
    ):
        self.f, self.args, self.pattern, self.progress = f, args, pattern, progress
        self.leaves, self.treedef = jax.tree_util.tree_flatten(params)
        self.budget = int(budget_bytes)
        out = jax.eval_shape(lambda p: f(p, *args), params)
        out_leaves = jax.tree_util.tree_leaves(out)
        self.m = sum(math.prod(o.shape) for o in out_leaves)
        self.out_dtype = jnp.result_type(*out_leaves) if out_leaves else jnp.float32
        self._largest = _largest_intermediate(f, params, args)
        self._base_pattern = None if pattern is None else pattern(params, *args)
        self._widen: set[int] = set()  # leaves whose complex step makes every leaf complex
        self._programs: dict[tuple, Any] = {}  # (leaf, chunk, dtype, widen) -> (traced, run)
        kinds = [(jnp.shape(a), jnp.result_type(a)) for a in self.leaves]
        shared = Counter(kinds)
        self._eager = {l for l, k in enumerate(kinds) if shared[k] >= SHARED_SHAPES}
        self.evaluations = 0
        self.refused: dict[int, str] = {}

    def params_with(self, l: int, leaf, widen: bool = False) -> Any:
        """``params`` with leaf ``l`` replaced; with ``widen``, the other real floating
        leaves cast to ``leaf``'s complex dtype (imaginary part zero): for an ``f`` whose ops
        ask their arguments for one dtype (``lax.pow(x, y)``)."""
        leaves = list(self.leaves)
        if widen:
            to = jnp.result_type(leaf)
            leaves = [jnp.asarray(a).astype(to) if _real_float(a) else a for a in leaves]
        leaves[l] = leaf
        return jax.tree_util.tree_unflatten(self.treedef, leaves)

    def flat(self, tree) -> jax.Array:
        """Every leaf of an output tree raveled into one ``(m,)`` vector."""
        out = jax.tree_util.tree_leaves(tree)
        if not out:
            return jnp.zeros((0,), self.out_dtype)
        return jnp.concatenate([jnp.reshape(a, (-1,)) for a in out])

    def at(self, l: int, leaf) -> jax.Array:
        """``f`` at ``params`` with leaf ``l`` set to ``leaf``, raveled."""
        return self.flat(self.f(self.params_with(l, leaf), *self.args))

    def chunk_size(self, l: int, points: int, complex_points: bool) -> int:
        """Points per chunk for leaf ``l``: :data:`CHUNK`, or the largest power of two below
        it that the budget holds (at least 1). Where a chunk is cheap (:data:`PAD_BYTES`), one
        size for every call, so that each primitive of ``f`` compiles once per leaf shape,
        not once per number of points; else no larger than the points (a power of two), so
        that no chunk of an expensive ``f`` is more than half padding."""
        leaf = self.leaves[l]
        item = jnp.dtype(jnp.result_type(leaf)).itemsize * (2 if complex_points else 1)
        per_point = 3 * math.prod(jnp.shape(leaf)) * item + 2 * self._largest * (
            2 if complex_points else 1
        )
        fit = max(1, self.budget // max(per_point, 1))
        size = min(CHUNK, 2 ** int(math.log2(fit)))
        if CHUNK * per_point <= PAD_BYTES:
            return int(size)
        return int(min(size, 2 ** math.ceil(math.log2(max(points, 1)))))

    def evaluate(self, l: int, deltas: Callable, n: int, is_complex: bool, label: str = ""):
        """``f`` at ``leaf_l + deltas(i)`` for the points ``i = 0 .. n-1``, in chunks.

        Args:
            l: the leaf moved.
            deltas: ``index (c,) ints -> array (c, *leaf shape)``: the moves of those points
                (NumPy or JAX), made chunk by chunk so that no more than one chunk of them
                exists at once. The last chunk's index is padded with its last point.
            n: the number of points.
            is_complex: whether the moves are complex (the complex step).
            label: what ``progress`` is told.

        Returns:
            ``(values (n, m) float64 or complex128 NumPy, changed (n,) bool NumPy)``:
            ``changed`` says which points changed the pattern (all False without one).
        """
        c = self.chunk_size(l, n, is_complex)
        base = jnp.asarray(self.leaves[l])
        if is_complex:
            base = base.astype(jnp.result_type(base.dtype, 1j))

        widen = is_complex and l in self._widen

        def point(delta):
            moved = self.params_with(l, base + delta, widen)
            value = self.flat(self.f(moved, *self.args))
            if self.pattern is None:
                return value, jnp.zeros((), bool)
            changed = jnp.any(self.pattern(_real(moved), *self.args) != self._base_pattern)
            return value, changed

        values, changed = [], []
        key = (l, c, jnp.dtype(base.dtype).name, widen)
        program = self._programs.get(key)
        for start in range(0, n, c):
            stop = min(start + c, n)
            index = np.minimum(np.arange(start, start + c), n - 1)  # padded: one shape
            d = jnp.asarray(deltas(index), base.dtype)
            if program is None:  # traced once per leaf and chunk size, then reused
                program = self._runner(jax.make_jaxpr(jax.vmap(point))(d), l in self._eager)
                if not widen:  # a widened program holds complex copies of every leaf
                    self._programs[key] = program
            if is_complex:  # traced at complex points is not run there (Pallas, callbacks)
                try:
                    v, ch = program(d)
                except Exception as error:  # noqa: BLE001 -- any failure: no complex step here
                    self.refused[l] = f"{type(error).__name__}: {str(error)[:120]}".strip()
                    self._programs.pop(key, None)
                    raise ComplexRefusedError(self.refused[l]) from error
            else:
                v, ch = program(d)
            values.append(np.asarray(v)[: stop - start])
            changed.append(np.asarray(ch)[: stop - start])
            self.evaluations += stop - start
            if self.progress is not None:
                self.progress(self.evaluations, label)
        if not values:
            return np.zeros((0, self.m)), np.zeros((0,), bool)
        wide = np.complex128 if np.iscomplexobj(values[0]) else np.float64
        return np.concatenate(values).astype(wide), np.concatenate(changed)

    @staticmethod
    def _runner(traced, eager: bool) -> Callable:
        """``d -> (values, changed)`` of a traced chunk: its ops one by one (``eager``), or
        one program (:func:`~functional_nn._compile.shared_program`), the traced constants
        (``f``'s other leaves, where they live) passed as arguments, never baked into the
        program."""
        jaxpr, consts = traced.jaxpr, traced.consts
        if eager:
            return lambda d: jax.core.eval_jaxpr(jaxpr, consts, d)
        whole = shared_program(jaxpr)
        return lambda d: whole(consts, d)

    def accepts_complex(self, l: int) -> bool:
        """Whether ``f`` takes leaf ``l`` complex and returns a complex output (a trace only):
        with the other leaves as they are, or else with every real leaf made complex too
        (then the complex step widens them, :meth:`params_with`).

        Necessary for the complex step, not sufficient: the checkers validate it numerically
        (:func:`~functional_nn.differences._estimates.complex_agrees`) before they trust it.
        """
        if l in self.refused:
            return False
        leaf = self.leaves[l]
        z = jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(jnp.result_type(leaf), 1j))
        for widen in (False, True):
            try:
                out = jax.eval_shape(
                    lambda leaf, widen=widen: self.flat(
                        self.f(self.params_with(l, leaf, widen), *self.args)
                    ),
                    z,
                )
            except Exception:  # noqa: BLE001 -- a failure on complex input: try wider, or no
                continue
            if widen:
                self._widen.add(l)
            return bool(jnp.issubdtype(out.dtype, jnp.complexfloating))
        return False


def _real_float(a) -> bool:
    return jnp.issubdtype(jnp.result_type(a), jnp.floating)


def _real(tree):
    return jax.tree_util.tree_map(lambda a: jnp.real(a) if jnp.iscomplexobj(a) else a, tree)


def _largest_intermediate(f, params, args) -> int:
    """Bytes of the largest value ``f`` computes (from its jaxpr, nested ones included): the
    memory one point adds beyond its moved leaf, up to the few values alive at once."""
    try:
        jaxpr = jax.make_jaxpr(lambda p: f(p, *args))(params)
    except Exception:  # noqa: BLE001 -- a function that cannot be traced: no estimate
        return 0
    largest = 0

    def walk(jx):
        nonlocal largest
        for eqn in jx.eqns:
            for v in eqn.outvars:
                aval = getattr(v, "aval", None)
                try:
                    largest = max(largest, math.prod(aval.shape) * aval.dtype.itemsize)
                except (AttributeError, TypeError):  # a token, a key: no array bytes
                    pass
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", None)
                if inner is not None and hasattr(inner, "eqns"):
                    walk(inner)

    walk(jaxpr.jaxpr)
    return largest
