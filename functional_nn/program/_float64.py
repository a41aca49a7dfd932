r"""``promote(f)``: the same program with every floating type raised to float64.

A gradient of a program that computes in float32, bfloat16 or float16 is judged against the
same program in float64, differenced with float64 steps (a thousand times smaller than
float32's, so a step crosses a ReLU kink a thousand times more rarely, and bfloat16's
rounding, which no finite difference of the program itself resolves, is gone). ``promote``
reads ``f``'s program at the dtypes it is written for and runs it again with:

- every floating input, closed-over array and constant raised to float64 (complex to
  complex128), exactly (a widening cast changes no value). A Python scalar is the constant
  JAX made of it when it traced: in a float32 program ``0.1`` is ``float32(0.1)``, raised as
  that value (write float64 constants as float64 arrays to keep all their digits);
- every cast to a narrower float (``astype``, ``convert_element_type``) raised to float64,
  ``preferred_element_type`` and any other dtype parameter likewise, and ``reduce_precision``
  dropped;
- through ``jit``, ``checkpoint``, ``cond``, ``while_loop``, ``scan`` and ``vmap`` (whose
  program is already batched), and through custom rules: a ``custom_jvp`` or ``custom_vjp``
  call becomes one again, its primal raised, and its rule the rule's own code traced at the
  program's dtypes and then raised (a rule that computes in bfloat16 is run in float64).

What cannot be raised is said, with the equation and the user's line (:class:`CannotPromote`):
a bitcast, a host callback, a Pallas kernel, an unknown primitive that holds a function. Under
a custom rule such an equation instead runs at its own dtypes (its inputs rounded to them, its
outputs raised): a kernel keeps its primal and is judged with its rule.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from functional_nn._util._precision import traces_float64, x64
from functional_nn.program._reader import Split, source_line, sub_jaxprs, trace

CALLS = ("jit", "pjit", "closed_call", "core_call")
"""Primitives that call a program (``jaxpr`` or ``call_jaxpr``): opened in place."""

CHECKPOINTS = ("remat2", "checkpoint", "remat")
"""``jax.checkpoint``'s primitive across releases: rebuilt with ``jax.checkpoint``."""

UNRAISABLE = {
    "bitcast_convert_type": "a bitcast reads the bits of its dtype",
    "pure_callback": "a host callback computes outside the program, in its own dtypes",
    "io_callback": "a host callback computes outside the program, in its own dtypes",
    "pallas_call": "a kernel is written for its dtypes",
    "shard_map": "a shard_map body is not opened",
    "xla_pmap": "a pmap body is not opened",
}
"""Primitives whose float64 version is not the same program, and why."""

DTYPE_PARAMS = ("new_dtype", "preferred_element_type", "dtype", "accumulation_type")


class CannotPromote(ValueError):  # noqa: N818 -- the name says what happened, as JAX's do
    """``f``'s program holds an equation that cannot be raised to float64 (its name, its line
    and why are in the message)."""


def wide(dtype):
    """float64 for a real floating dtype, complex128 for a complex one; others unchanged."""
    if dtype is None:
        return None
    try:
        d = np.dtype(dtype)
    except TypeError:  # a PRNG key dtype
        return dtype
    if jnp.issubdtype(d, jnp.complexfloating):
        return np.dtype(np.complex128)
    if jnp.issubdtype(d, jnp.floating):
        return np.dtype(np.float64)
    return dtype


def raised(value):
    """An array or scalar with a floating dtype widened (exactly), others as they are."""
    dtype = getattr(value, "dtype", None)
    if dtype is None or wide(dtype) is dtype or np.dtype(wide(dtype)) == np.dtype(dtype):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value, wide(dtype))
    return jnp.asarray(value, wide(dtype))


def promote(f: Callable, *, like: Any = None) -> Callable:
    r"""``f`` with every floating type of its program raised to float64 (module docstring).

    Args:
        f: any function of arrays (pytrees of them; other leaves are held as they are).
        like: optional example arguments (arrays or ``jax.ShapeDtypeStruct``, the tree of
            ``f``'s arguments, as a tuple): the dtypes the program is written for. Without it,
            the program is read at the dtypes of each call's own arguments; with it, the
            promoted ``f`` takes arguments of any floating dtype (float64 points near a
            bfloat16 one, as the checkers pass them) and reads the program at ``like``'s.

    Returns:
        ``promoted(*args)``: ``f``'s outputs, floating ones in float64; its attribute
        ``at_own_dtypes`` names the equations it ran at their own dtypes (under a custom
        rule: then the float64 program is not float64 throughout). Called with concrete
        arrays it runs inside ``jax.enable_x64`` (the process's setting untouched, one
        compiled program per argument shapes); traced (under ``jit``, ``vmap``, a checker),
        it must be traced where float64 is on already.

    Raises:
        CannotPromote: an equation of the program cannot be raised (its line and why).

    >>> import jax.numpy as jnp
    >>> f = lambda x: jnp.sum(x.astype(jnp.bfloat16) ** 2)
    >>> x = jnp.asarray([1.0, 1.0 / 3.0], jnp.float32)
    >>> float(f(x)), promote(f)(x).dtype, float(promote(f)(x))
    (1.109375, dtype('float64'), 1.1111111...)
    """
    cache: dict = {}
    process_x64 = traces_float64()  # the program as the process runs it
    own: set[str] = set()  # the equations run at their own dtypes (under a custom rule)

    def program(split: Split):
        dtypes = None
        if like is not None:
            ref = Split(tuple(like) if isinstance(like, (tuple, list)) else (like,))
            dtypes = tuple(np.dtype(a.dtype) for a in ref.arrays())
        key = (split.treedef, split.avals(), dtypes)
        if key not in cache:
            closed, out_tree = trace(f, split, dtypes, process_x64)
            cache[key] = (closed, out_tree, dtypes)
        return cache[key]

    @functools.wraps(f)
    def promoted(*args):
        split = Split(args)
        traced = any(isinstance(a, jax.core.Tracer) for a in split.arrays())
        if traced:
            if not traces_float64():
                raise ValueError(
                    "promote(f) traced with float64 off: trace it inside jax.enable_x64(True) "
                    "(or call it with concrete arrays, which it runs inside that context)"
                )
            closed, out_tree, _ = program(split)
            outs = evaluate(closed, [raised(a) for a in split.arrays()], False, own)
            return jax.tree_util.tree_unflatten(out_tree, outs)
        closed, out_tree, _ = program(split)
        with x64():
            run = _compiled(closed)
            outs = run(*[raised(jnp.asarray(a)) for a in split.arrays()])
        return jax.tree_util.tree_unflatten(out_tree, outs)

    promoted.at_own_dtypes = own  # type: ignore[attr-defined]
    return promoted


@functools.lru_cache(maxsize=64)
def _compiled(closed):
    return jax.jit(lambda *a: evaluate(closed, a))


def evaluate(closed, args, in_rule: bool = False, own: set | None = None) -> list:
    """Run a closed jaxpr with every floating type raised (``args`` already raised); the
    names of equations run at their own dtypes are added to ``own``."""
    token = _OWN.set(own if own is not None else _OWN.get())
    try:
        return _run(closed.jaxpr, closed.consts, args, in_rule)
    finally:
        _OWN.reset(token)


_OWN: contextvars.ContextVar = contextvars.ContextVar("own", default=None)


def _run(jaxpr, consts, args, in_rule: bool) -> list:
    env: dict = {}

    def read(a):
        if isinstance(a, jcore.Literal):
            return raised(a.val)
        return env[a]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = raised(c)
    for v, a in zip(jaxpr.invars, args, strict=True):
        env[v] = a
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(a) for a in eqn.invars], in_rule)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, o in zip(eqn.outvars, outs, strict=True):
            env[v] = o
    return [read(a) for a in jaxpr.outvars]


def _closed(j) -> jcore.ClosedJaxpr:
    return j if isinstance(j, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(j, [])


def _apply(eqn, invals: list, in_rule: bool):
    name, params = eqn.primitive.name, eqn.params
    if name in CALLS:
        sub = params.get("jaxpr", params.get("call_jaxpr"))
        return evaluate(_closed(sub), invals, in_rule)
    if name in CHECKPOINTS:
        sub = _closed(params["jaxpr"])
        fn = jax.checkpoint(lambda *a: evaluate(sub, a, in_rule),
                            prevent_cse=params.get("prevent_cse", True),
                            policy=params.get("policy"))  # fmt: skip
        return fn(*invals)
    if name == "cond":
        branches = [functools.partial(_branch, _closed(b), in_rule) for b in params["branches"]]
        return jax.lax.switch(invals[0], branches, *invals[1:])
    if name == "while":
        return _while(params, invals, in_rule)
    if name == "custom_jvp_call":
        return _custom_jvp(eqn, invals, in_rule)
    if name in ("custom_vjp_call", "custom_vjp_call_jaxpr"):
        return _custom_vjp(eqn, invals, in_rule)
    if name == "reduce_precision":
        return invals[0]
    if name in UNRAISABLE or _holds_function(params):
        if in_rule:
            return _at_own_dtypes(eqn, invals)
        why = UNRAISABLE.get(name, "it holds a function that promote cannot open")
        raise CannotPromote(
            f"promote: cannot raise {name} (at {source_line(eqn)}) to float64: {why}; under "
            "a jax.custom_vjp or custom_jvp it would run at its own dtypes and be judged with "
            "its rule"
        )
    new = {k: (wide(v) if k in DTYPE_PARAMS else v) for k, v in params.items()}
    for key, sub in sub_jaxprs(params):  # scan, reduce, a scatter's combiner: bound again
        new = _with_raised(new, key, sub, in_rule)
    return _bind(eqn.primitive, new, invals)


def _holds_function(params: dict) -> bool:
    """Whether an equation's params hold a function (a rule, a kernel): not opened."""
    return any(callable(v) and not isinstance(v, (type, np.dtype)) for v in params.values())


def _branch(closed, in_rule, *ops):
    return evaluate(closed, ops, in_rule)


def _while(params, invals, in_rule):
    nc, nb = params["cond_nconsts"], params["body_nconsts"]
    cconsts, bconsts, init = invals[:nc], invals[nc : nc + nb], invals[nc + nb :]
    cond, body = _closed(params["cond_jaxpr"]), _closed(params["body_jaxpr"])
    return jax.lax.while_loop(
        lambda c: evaluate(cond, [*cconsts, *c], in_rule)[0],
        lambda c: evaluate(body, [*bconsts, *c], in_rule),
        list(init),
    )


def _with_raised(params: dict, key: str, sub, in_rule: bool) -> dict:
    """``params`` with the jaxpr at ``key`` raised (traced again at float64 avals)."""
    closed = _closed(sub)
    avals = [jax.ShapeDtypeStruct(v.aval.shape, wide(v.aval.dtype)) for v in closed.jaxpr.invars]
    new = jax.make_jaxpr(lambda *a: evaluate(closed, a, in_rule))(*avals)
    if isinstance(sub, jcore.Jaxpr):
        if new.consts:
            raise CannotPromote(f"promote: the program inside {key} gained constants when raised")
        new = new.jaxpr
    if "[" in key:  # one of a tuple (cond's branches are opened above; others alike)
        name, i = key[:-1].split("[")
        items = list(params[name])
        items[int(i)] = new
        return {**params, name: type(params[name])(items)}
    return {**params, key: new}


def _bind(primitive, params: dict, invals):
    """``primitive`` bound as ``jax.core.eval_jaxpr`` binds it (its sub-functions first)."""
    got = primitive.get_bind_params(params)
    if isinstance(got, tuple):  # jax before 0.7: (sub-functions, params)
        subfuns, bind_params = got
        return primitive.bind(*subfuns, *invals, **bind_params)
    return primitive.bind(*invals, **got)


def _own(eqn) -> list[jax.ShapeDtypeStruct]:
    return [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars]


def _at_own_dtypes(eqn, invals):
    """An equation that cannot be raised, run at the dtypes the program gave it."""
    if _OWN.get() is not None:
        _OWN.get().add(f"{eqn.primitive.name} (at {source_line(eqn)})")
    low = [jnp.asarray(a).astype(s.dtype) for a, s in zip(invals, _own(eqn), strict=True)]
    outs = _bind(eqn.primitive, eqn.params, low)
    if eqn.primitive.multiple_results:
        return [raised(o) for o in outs]
    return raised(outs)


def _original(eqn):
    def call(*args):
        out = _bind(eqn.primitive, eqn.params, args)
        return list(out) if eqn.primitive.multiple_results else [out]

    return call


def _float(s) -> bool:
    return jnp.issubdtype(s.dtype, jnp.inexact)


def _tangent_struct(s):
    if _float(s):
        return jax.ShapeDtypeStruct(s.shape, s.dtype)
    return jax.ShapeDtypeStruct(s.shape, jax.dtypes.float0)


def _custom_jvp(eqn, invals, in_rule):
    """A ``custom_jvp`` call again: its primal raised, its rule traced at the program's
    dtypes (``jax.jvp`` of the call, which runs the rule's own code) and raised."""
    primal = _closed(eqn.params["call_jaxpr"])
    own = _own(eqn)
    call = _original(eqn)

    @jax.custom_jvp
    def fn(*args):
        return evaluate(primal, args, True)

    @fn.defjvp
    def fn_jvp(primals, tangents):
        rule = jax.make_jaxpr(lambda p, t: jax.jvp(call, p, t))(
            own, [_tangent_struct(s) for s in own]
        )
        t_in = [tangents[i] if _float(s) else _zero_float0(s) for i, s in enumerate(own)]
        outs = evaluate(rule, [*primals, *t_in], True)
        n = len(outs) // 2
        return outs[:n], outs[n:]

    return fn(*invals)


def _zero_float0(s):
    return np.zeros(s.shape, jax.dtypes.float0)


def _custom_vjp(eqn, invals, in_rule):
    """A ``custom_vjp`` call again: its primal raised, its backward the rule's own (``jax.vjp``
    of the call at the program's dtypes: the forward and ``bwd`` as written) raised."""
    primal = _closed(eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr")))
    own = _own(eqn)
    call = _original(eqn)
    outs_own = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.outvars]

    @jax.custom_vjp
    def fn(*args):
        return evaluate(primal, args, True)

    def fwd(*args):
        return fn(*args), args

    def bwd(args, cts):
        def pull(p, c):
            _, back = jax.vjp(call, *p)
            return back(list(c))

        cts_own = [jax.ShapeDtypeStruct(s.shape, s.dtype) for s in outs_own]
        rule = jax.make_jaxpr(pull)(own, cts_own)
        back = evaluate(rule, [*args, *cts], True)
        return tuple(b if _float(s) else None for b, s in zip(back, own, strict=True))

    fn.defvjp(fwd, bwd)
    return fn(*invals)
