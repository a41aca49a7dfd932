r"""The lecture's closed forms read from the library's code (``fnn.symbolic``), proved equal to
the ones written by hand in this package, and their accuracy in ULPs (``fnn.check_symbolic``).

The other modules here derive a derivative with SymPy and compare it with the formula that
``functional_nn`` writes by hand. This one closes the remaining gap: that the JAX code *is* that
formula. :func:`functional_nn.symbolic` reads each function's program (``fnn.sigmoid``,
``fnn.bce``'s value and gradient on probabilities and on logits, ``fnn.mse``'s) into a SymPy
expression, with the stable forms' branches as ``Piecewise`` (the sign of ``z`` in the stable
sigmoid and softplus, the label weights 0 or 1 of ``0 log 0 = 0``). :func:`prove` splits the
read form into its branches and simplifies the difference from the hand-written form to 0 in
each: on a branch decided by ``y = 0`` (or ``y = 1``) the hand-written form is taken at that
label too; on a branch decided by the sign of a symbol, the symbol carries that sign (``z >= 0``:
a nonnegative symbol), so the branch is proved on its side.

:data:`ULP_CASES` are the same functions as functions of one real (the label fixed at 1 for BCE,
at 0 for MSE) for :func:`functional_nn.check_symbolic` in float32 and float64; the record
(``DERIVATIONS.md``) lists their tables.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax.numpy as jnp
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

import functional_nn as fnn

__all__ = ["READ", "ULP_CASES", "ReadForm", "branches", "prove", "ulp_reports"]

z = sp.Symbol("z", real=True)
_z0, _p, _y = (sp.Symbol(n, real=True) for n in ("z_0", "y_hat_0", "y_0"))
_sigma = 1 / (1 + sp.exp(-z))
_sigma0 = 1 / (1 + sp.exp(-_z0))


class ReadForm(NamedTuple):
    """A library function, the closed form read from its program, and the hand-written one."""

    name: str
    checks: str  # the library function whose program was read
    read: sp.Expr  # fnn.symbolic of it
    hand: sp.Expr  # the textbook form, as this package writes it


def _one(loss_fn: Callable) -> sp.Expr:
    """The closed form of a loss term at one output: ``(y_hat, y)`` of shape ``(1,)``."""
    read = fnn.symbolic(loss_fn, jnp.full(1, 0.5), jnp.full(1, 0.25))
    return read[0] if isinstance(read, sp.NDimArray) else read


_bce = -(_y * sp.log(_p) + (1 - _y) * sp.log(1 - _p))
READ = [
    ReadForm("sigmoid", "functional_nn.sigmoid", fnn.symbolic(fnn.sigmoid, 0.0), _sigma),
    ReadForm("sigmoid'", "functional_nn.sigmoid.derivative",
             fnn.symbolic(fnn.sigmoid.derivative, 0.0), sp.diff(_sigma, z)),
    ReadForm("BCE", "functional_nn.bce.value", _one(fnn.bce.value), _bce),
    ReadForm("BCE'", "functional_nn.bce.grad", _one(fnn.bce.grad), sp.diff(_bce, _p)),
    ReadForm("BCE on logits", "functional_nn.bce.logits_value", _one(fnn.bce.logits_value),
             sp.log(1 + sp.exp(_z0)) - _y * _z0),
    ReadForm("d BCE / dz", "functional_nn.bce.logits_grad", _one(fnn.bce.logits_grad),
             _sigma0 - _y),
    ReadForm("MSE", "functional_nn.mse.value", _one(fnn.mse.value), (_p - _y) ** 2),
    ReadForm("MSE'", "functional_nn.mse.grad", _one(fnn.mse.grad), 2 * (_p - _y)),
]  # fmt: skip
"""Every lecture function whose program is read, beside its hand-written closed form."""


def _conditions(e: sp.Expr) -> list[sp.Basic]:
    """The relations that decide ``e``'s ``Piecewise`` branches, each once (not its negation)."""
    out: list[sp.Basic] = []
    for pw in sorted(e.atoms(sp.Piecewise), key=sp.default_sort_key):
        for _, cond in pw.args:
            for rel in sorted(cond.atoms(sp.core.relational.Relational), key=sp.default_sort_key):
                if rel not in out and rel.negated not in out:
                    out.append(rel)
    return out


def branches(read: sp.Expr, hand: sp.Expr) -> Iterator[tuple[sp.Basic, sp.Expr, sp.Expr]]:
    """``(condition, read, hand)`` for each branch of ``read``: every relation that decides a
    ``Piecewise`` taken true and false in turn, the combinations that cannot hold together
    (``z >= 0`` and ``z < 0``) left out. An equation ``s = c`` of a symbol taken true
    substitutes ``c`` for ``s`` in both forms; any other relation is replaced by its truth value
    in ``read`` alone (:func:`prove` then holds the branch's sign in its symbol)."""
    yield from _split(read, hand, [])


def _split(read, hand, taken):
    found = _conditions(read)
    if not found:
        condition = sp.simplify(sp.And(*taken))
        if condition is not sp.false:
            yield condition, read, hand
        return
    rel = found[0]
    for truth in (True, False):
        said = rel if truth else rel.negated
        if isinstance(said, sp.Eq) and said.lhs.is_Symbol and said.rhs.is_number:
            sub = {said.lhs: said.rhs}
            yield from _split(read.subs(sub), hand.subs(sub), [*taken, said])
        else:
            value = sp.true if truth else sp.false
            yield from _split(read.xreplace({rel: value, rel.negated: ~value}), hand,
                              [*taken, said])  # fmt: skip


def _plain(e: sp.Expr) -> sp.Expr:
    """``log1p`` and ``expm1`` as ``log(1 + a)`` and ``exp(a) - 1``, for ``simplify``."""
    return e.replace(log1p, lambda a: sp.log(1 + a)).replace(expm1, lambda a: sp.exp(a) - 1)


_SIGNS = {">=": "nonnegative", ">": "positive", "<=": "nonpositive", "<": "negative"}


def _on_branch(condition: sp.Basic) -> dict:
    """The substitution that puts a branch's sign conditions into its symbols: ``z >= 0``
    makes ``z`` a nonnegative symbol (so ``Abs(z)`` is ``z`` there), ``z = 0`` makes it 0."""
    sub: dict = {}
    for rel in sp.And.make_args(condition):
        if not (isinstance(rel, sp.core.relational.Relational) and rel.lhs.is_Symbol):
            continue
        if isinstance(rel, sp.Eq) and rel.rhs.is_number:
            sub[rel.lhs] = rel.rhs
        elif rel.rhs == 0 and rel.rel_op in _SIGNS:
            sub[rel.lhs] = sp.Symbol(rel.lhs.name, real=True, **{_SIGNS[rel.rel_op]: True})
    return sub


def prove(form: ReadForm) -> list[tuple[sp.Basic, sp.Expr]]:
    """``(branch, difference)`` for each branch of the read form: the difference from the
    hand-written form on that branch's side (its sign conditions held by its symbols),
    simplified; 0 is a proof on that branch."""
    positive = {_p: sp.Symbol("p", positive=True)}  # a probability: log(y_hat) is real
    out = []
    for cond, read, hand in branches(form.read, form.hand):
        side = _on_branch(cond)
        difference = sp.simplify(_plain(read - hand).subs(positive).xreplace(side))
        out.append((cond, difference))
    return out


def _bce_at_1(y_hat):
    return fnn.bce.value(y_hat[None], jnp.ones(1, y_hat.dtype))


def _bce_on_logits_at_1(z):
    return fnn.bce.logits_value(z[None], jnp.ones(1, z.dtype))


def _mse_at_0(y_hat):
    return fnn.mse.value(y_hat[None], jnp.zeros(1, y_hat.dtype))


ULP_CASES = {
    "fnn.sigmoid": fnn.sigmoid,
    "fnn.bce.value(y_hat, y = 1)": _bce_at_1,
    "fnn.bce.logits_value(z, y = 1)": _bce_on_logits_at_1,
    "fnn.mse.value(y_hat, y = 0)": _mse_at_0,
}
"""The lecture's functions as functions of one real, for :func:`functional_nn.check_symbolic`."""


def ulp_reports(dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[tuple[str, str], object]:
    """``check_symbolic`` (value and first derivative) of every :data:`ULP_CASES` entry."""
    return {(name, d): fnn.check_symbolic(fn, dtype=d) for name, fn in ULP_CASES.items()
            for d in dtypes}  # fmt: skip
