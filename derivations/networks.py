r"""Whole small networks (slides "Application to deep learning", "Gradient of W(l)"): every
weight an explicit symbol, J and its gradient with respect to every parameter, the per-layer
Jacobian factors as matrices with the shapes of the notation (docs/lecture.md, "Notation"),
and a symbolic proof that the delta-rule recursion equals the direct derivative.

Notation as in the library: ``W(l)`` is ``(H_l, H_{l-1})`` with entries ``w^{(l)}_{ij}``,
``b(l)`` is ``(H_l,)``, ``z(l) = W(l) h(l-1) + b(l)``, ``h(l) = act(z(l))``; ``w(l)`` is
``W(l)`` raveled row-major. Per sample, J is the loss of one ``(x, y)``: BCE on the logits
(``softplus(z) - y z``) for a sigmoid output with BCE, as the library computes it.
"""

from __future__ import annotations

from typing import NamedTuple

import sympy as sp

from derivations.symbols import ACTIVATIONS, sigmoid, softplus

__all__ = ["SymbolicNetwork", "symbolic_network", "delta_rule_gradient", "prove_delta_rule"]


class SymbolicNetwork(NamedTuple):
    """A network written out in symbols.

    Attributes:
        sizes, hidden, output, bias, loss: the architecture and loss.
        x, y: input and target symbols, ``(D,)`` and ``(O,)``.
        W, b: per layer, the weight matrix and bias vector (``None`` without bias).
        params: every parameter symbol, in the library's flattening order (layer by layer,
            ``W(l)`` row-major, then ``b(l)``).
        z, h: per layer, the pre-activations and outputs (``h[0] = x``, ``z[0] = None``).
        J: the per-sample loss.
        grad: ``dJ/dtheta`` for every parameter, in ``params`` order.
        factors: ``{name: Matrix}``: ``dJ/dy_hat`` (or ``dJ/dz(L+1)`` when fused) and, per
            layer, ``dh(l)/dh(l-1)`` and ``dh(l)/dw(l)``.
        fused: whether J is computed from the logits.
    """

    sizes: tuple[int, ...]
    hidden: str
    output: str
    bias: bool
    loss: str
    x: sp.Matrix
    y: sp.Matrix
    W: list
    b: list
    params: list
    z: list
    h: list
    J: sp.Expr
    grad: list
    factors: dict
    fused: bool


def _weight(l: int, i: int, j: int) -> sp.Symbol:
    """``w^{(l)}_{ij}``, 1-based as on the slides."""
    return sp.Symbol(f"w^{{({l})}}_{{{i + 1}{j + 1}}}", real=True)


def _act(name: str, z: sp.Matrix) -> sp.Matrix:
    return z.applyfunc(ACTIVATIONS[name])


def _act_prime(name: str, z: sp.Matrix) -> sp.Matrix:
    u = sp.Dummy("u", real=True)
    d = sp.diff(ACTIVATIONS[name](u), u)
    return z.applyfunc(lambda zi: d.subs(u, zi))


def symbolic_network(sizes, hidden="sigmoid", output="sigmoid", bias=False, loss="bce",
                     factors: bool = True) -> SymbolicNetwork:  # fmt: skip
    """Write the network out in symbols and derive J, its gradient and its factors."""
    sizes = tuple(int(s) for s in sizes)
    L1 = len(sizes) - 1
    x = sp.Matrix(sp.symbols(f"x_1:{sizes[0] + 1}", real=True))
    y = sp.Matrix(sp.symbols(f"y_1:{sizes[-1] + 1}", real=True))
    W, b, params = [None], [None], []
    for l in range(1, L1 + 1):
        Wl = sp.Matrix(sizes[l], sizes[l - 1], lambda i, j, l=l: _weight(l, i, j))
        bl = sp.Matrix(sp.symbols(f"b^{{({l})}}_1:{sizes[l] + 1}", real=True)) if bias else None
        W.append(Wl)
        b.append(bl)
        params += list(Wl)  # row-major, as jax.flatten_util.ravel_pytree
        if bias:
            params += list(bl)
    z, h = [None], [x]
    for l in range(1, L1 + 1):
        zl = W[l] * h[l - 1] + (b[l] if bias else sp.zeros(sizes[l], 1))
        z.append(zl)
        h.append(_act(output if l == L1 else hidden, zl))
    fused = loss == "bce" and output == "sigmoid"
    if fused:
        J = sum(softplus(zo) - yo * zo for zo, yo in zip(z[L1], y, strict=True))
    elif loss == "mse":
        J = sum((ho - yo) ** 2 for ho, yo in zip(h[L1], y, strict=True))
    else:
        raise ValueError(f"symbolic_network: loss {loss!r} with output {output!r} is not derived")
    grad = [sp.diff(J, p) for p in params]
    net = SymbolicNetwork(sizes, hidden, output, bias, loss, x, y, W, b, params, z, h, J, grad,
                          {}, fused)  # fmt: skip
    if factors:
        net.factors.update(jacobian_factors(net))
    return net


def jacobian_factors(net: SymbolicNetwork) -> dict:
    """The lecture's factors as SymPy matrices (shapes of docs/lecture.md, "Notation"), each
    the Jacobian of its local function, evaluated at the forward pass."""
    L1 = len(net.sizes) - 1
    out = {}
    if net.fused:
        zs = sp.Matrix(sp.symbols(f"zeta_1:{net.sizes[-1] + 1}", real=True))
        Jz = sum(softplus(a) - yo * a for a, yo in zip(zs, net.y, strict=True))
        out[f"dJ/dz({L1})"] = (
            sp.Matrix([Jz]).jacobian(zs).subs(dict(zip(zs, net.z[L1], strict=True)))
        )
    else:
        hs = sp.Matrix(sp.symbols(f"eta_1:{net.sizes[-1] + 1}", real=True))
        Jh = sum((a - yo) ** 2 for a, yo in zip(hs, net.y, strict=True))
        out["dJ/dy_hat"] = sp.Matrix([Jh]).jacobian(hs).subs(dict(zip(hs, net.h[L1], strict=True)))
    for l in range(L1, 0, -1):
        act = "identity" if (l == L1 and net.fused) else (net.output if l == L1 else net.hidden)
        hp = sp.Matrix(sp.symbols(f"u_1:{net.sizes[l - 1] + 1}", real=True))
        local = _act(act, net.W[l] * hp + (net.b[l] if net.bias else sp.zeros(net.sizes[l], 1)))
        at = dict(zip(hp, net.h[l - 1], strict=True))
        name = f"z({l})" if (l == L1 and net.fused) else f"h({l})"
        out[f"d{name}/dw({l})"] = local.jacobian(list(net.W[l])).subs(at)
        if l > 1:
            out[f"d{name}/dh({l - 1})"] = local.jacobian(hp).subs(at)
    return out


def delta_rule_gradient(net: SymbolicNetwork) -> list:
    """The gradient by the delta rule, symbolically: ``delta(L+1) = sigma(z) - y`` (fused) or
    ``dJ/dy_hat * act'(z)``; ``dJ/dW(l) = delta(l) h(l-1)^T``; ``delta(l-1) = (W(l)^T
    delta(l)) * act'(z(l-1))``. Returned in ``params`` order."""
    L1 = len(net.sizes) - 1
    if net.fused:
        delta = net.z[L1].applyfunc(sigmoid) - net.y
    else:
        dJ_dy_hat = 2 * (net.h[L1] - net.y)
        delta = dJ_dy_hat.multiply_elementwise(_act_prime(net.output, net.z[L1]))
    per_layer = {}
    for l in range(L1, 0, -1):
        dW = delta * net.h[l - 1].T
        per_layer[l] = list(dW) + (list(delta) if net.bias else [])
        if l > 1:
            delta = (net.W[l].T * delta).multiply_elementwise(_act_prime(net.hidden, net.z[l - 1]))
    return [g for l in range(1, L1 + 1) for g in per_layer[l]]


def prove_delta_rule(net: SymbolicNetwork) -> bool:
    """True when every entry of the delta rule minus the direct derivative is exactly 0."""
    for direct, delta in zip(net.grad, delta_rule_gradient(net), strict=True):
        difference = sp.expand(direct - delta)
        if difference != 0 and sp.simplify(difference) != 0:
            return False
    return True
