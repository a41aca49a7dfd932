"""Every failing check names the rule: :func:`locating` wraps ``check_grad``, ``check_vjp``
and ``check_jvp`` so that a failure runs :func:`~functional_nn.locate` and keeps its answer
as ``report.located``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import jax
import jax.numpy as jnp

from functional_nn.checking._directions import host_rng
from functional_nn.checking._locator import DOORS, LocateReport, locate
from functional_nn.checking._sharded_check import is_sharded

F = TypeVar("F", bound=Callable[..., Any])


def locating(kind: str) -> Callable[[F], F]:
    """A front door (``check_grad``, ``check_vjp``, ``check_jvp``) that, when its check fails,
    runs :func:`locate` on the function and keeps it as ``report.located``; its own
    ``locate=False`` parameter (declared there, read here) turns that off. A passing check
    costs nothing more. A user's own ``grad=`` / ``vjp=`` / ``jvp=`` is not ``jax.grad(f)``'s
    program: then nothing is located and the description says so (``locate(f, params)``
    checks the rules that ``jax.grad(f)`` runs)."""
    own = {"grad": "grad", "vjp": "vjp", "jvp": "jvp"}[kind]

    def wrap(front: F) -> F:
        @functools.wraps(front)
        def door(f, params, *args, **kw):
            report = front(f, params, *args, **kw)  # its own ``locate`` parameter: unused
            if report.ok or not kw.get("locate", True):
                return report
            if is_sharded(params):
                report.description += (
                    "; not located: locate reads units on the host, and the leaves are sharded"
                )
                return report
            if (args[0] if args else kw.get(own)) is not None:
                report.description += (
                    f"; {own}= given: not located (fnn.locate(f, params) checks the rules of "
                    "jax.grad(f)'s program, not a function of your own)"
                )
                return report
            try:
                report.located = _locate_failure(kind, f, params, kw.get("key"), kw.get("k", 3))
            except Exception as err:  # noqa: BLE001 -- a failing check must still report
                report.description += f"; locate could not run: {type(err).__name__}: {err}"
            return report

        DOORS[kind] = door
        return cast(F, door)  # the same signature: type checkers see the front door's

    return wrap


def _locate_failure(kind: str, f: Callable, params: Any, key, k: int) -> LocateReport:
    """``locate`` for a failed check, with the equations of JAX's own rules checked where the
    custom rules explain nothing (``primitives="auto"``): ``f`` itself (``check_grad``), or
    ``<w, g(params)>`` (``check_vjp``, ``check_jvp``), ``w`` the first of the cotangents
    ``check_vjp`` drew (real outputs; a random one for complex outputs and for
    ``check_jvp``, whose tangents enter no scalar: locate checks each rule in both modes
    anyway)."""
    if kind == "grad":
        return locate(f, params, key=key, primitives="auto")
    outs = jax.eval_shape(f, params)
    leaves, _ = jax.tree_util.tree_flatten(outs)
    if kind == "vjp" and all(jnp.issubdtype(s.dtype, jnp.floating) for s in leaves):
        rng = host_rng(0 if key is None else key)  # as check_vjp draws its cotangents
        w = [rng.standard_normal((k, *s.shape)).astype(s.dtype)[0] for s in leaves]
    else:
        keys = jax.random.split(jax.random.fold_in(_key(key), 7), max(len(leaves), 1))
        w = [jax.random.normal(kk, s.shape, s.dtype)
             if jnp.issubdtype(s.dtype, jnp.inexact) else None
             for kk, s in zip(keys, leaves, strict=False)]  # fmt: skip

    def along(p):
        ys = jax.tree_util.tree_leaves(f(p))
        return sum(jnp.sum(jnp.real(jnp.conj(c) * y)) for c, y in zip(w, ys, strict=True)
                   if c is not None)  # fmt: skip

    along.__name__ = getattr(f, "__name__", "g")
    return locate(along, params, key=_key(key), primitives="auto")


def _key(key):
    if key is None or isinstance(key, int):
        return jax.random.key(0 if key is None else key)
    return key
