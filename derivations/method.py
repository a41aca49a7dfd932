"""``sympy_gradient``: the SymPy closed forms of a whole network as a gradient method.

For a network of at most :data:`MAX_PARAMS` parameters, the per-sample loss and its gradient
with respect to every parameter are derived symbolically (:mod:`derivations.networks`),
lambdified to JAX with common-subexpression elimination, compiled once per architecture and
loss (cached), and vmapped over the samples of a batch. The signature is the library's:
``sympy_gradient(net, loss, params, x, y, reduction="sum") -> (J, grads)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import sympy as sp

from derivations.networks import symbolic_network
from derivations.symbols import JAX_MODULES
from functional_nn import Layer
from functional_nn._util._validation import cast_like
from functional_nn.lecture._cost import prepare, reduction_scale

__all__ = ["MAX_PARAMS", "closed_form", "sympy_gradient"]

MAX_PARAMS = 200
"""The largest network the method accepts. Derivation, lambdify and the first jitted call
grow faster than linearly in P (measured in the issue note: about 1 s for the lecture's 18
parameters); beyond this the compile time is minutes, not seconds."""


@functools.lru_cache(maxsize=32)
def closed_form(sizes, hidden, output, bias, loss):
    """The lambdified per-sample ``(J, [dJ/dtheta_p])`` of an architecture, cached."""
    net = symbolic_network(sizes, hidden, output, bias, loss, factors=False)
    args = [list(net.x), list(net.y), net.params]
    return sp.lambdify(args, [net.J, *net.grad], modules=JAX_MODULES, cse=True)


def sympy_gradient(net, loss, params, x, y, reduction: str = "sum"):
    """The gradient from SymPy's closed forms, with the common signature.

    Raises:
        ValueError: for a network of more than :data:`MAX_PARAMS` parameters, or a loss and
            output that have no closed form here (BCE needs a sigmoid output).
    """
    loss_, xb, yb = prepare(net, loss, params, x, y, reduction, "sympy_gradient")
    if net.output not in ("sigmoid", "identity") or loss_.name not in ("bce", "mse"):
        raise ValueError(
            f"sympy_gradient: closed forms are derived for sigmoid or identity outputs with BCE "
            f"or MSE; got output={net.output!r}, loss={loss_.name!r}"
        )
    P = net.num_params()
    if P > MAX_PARAMS:
        raise ValueError(
            f"sympy_gradient: the network has P={P} parameters; closed forms are derived for "
            f"at most {MAX_PARAMS} (sizes={net.sizes}): use backprop or autodiff"
        )
    f = closed_form(net.sizes, net.hidden, net.output, net.bias, loss_.name)
    theta = jnp.concatenate(
        [leaf for layer in params for leaf in (layer.W.ravel(), layer.b) if leaf is not None]
    )

    def per_sample(xn, yn):
        out = f(list(xn), list(yn), list(theta))
        return jnp.stack([jnp.asarray(v, theta.dtype) * jnp.ones((), theta.dtype) for v in out])

    values = jnp.sum(jax.vmap(per_sample)(xb, yb), axis=0) * reduction_scale(
        reduction, xb
    )  # (1 + P,)
    J, flat = values[0], values[1:]
    grads, offset = [], 0
    for layer in params:
        W = flat[offset : offset + layer.W.size].reshape(layer.W.shape)
        offset += layer.W.size
        b = None
        if layer.b is not None:
            b = flat[offset : offset + layer.b.size]
            offset += layer.b.size
        grads.append(Layer(W, b))
    return J, cast_like(tuple(grads), params)
