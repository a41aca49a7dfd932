r"""Networks as pure functions over a tuple of per-layer parameters.

The lecture's deep network, with layers :math:`l = 1, \dots, L+1`:

.. math::

    h^{(0)} = x, \qquad z^{(l)} = W^{(l)} h^{(l-1)} + b^{(l)}, \qquad
    h^{(l)} = \mathrm{act}(z^{(l)}), \qquad \hat y = h^{(L+1)}

``W(l)`` has shape ``(H_l, H_{l-1})`` (out, in) and ``b(l)`` shape ``(H_l,)``, with
``H_0 = D`` and ``H_{L+1} = O``. The hidden layers share one activation; the output layer has
its own (``sigmoid`` for classification, ``identity`` for regression). The lecture's networks
have no bias: ``Network(sizes, bias=False)`` stores ``b = None``.

- Logistic regression: ``Network((D, 1))``.
- Multi-output logistic regression: ``Network((D, O))``.
- Deep network with L hidden layers: ``Network((D, H_1, ..., H_L, O))``.
- Regression network: ``Network(sizes, output="identity")`` (with an MSE loss).

A sample ``x`` has shape ``(D,)`` and a batch ``(N, D)``, one sample per row; every function
accepts both and answers in kind. Params and network are checked against each other at trace
time (costing nothing under :func:`jax.jit`), and every mismatch is reported in one error.

>>> import jax
>>> net = Network((4, 3, 2), bias=False)           # the lecture's network
>>> params = net.init(jax.random.key(0))
>>> [p.W.shape for p in params], num_params(params)
([(3, 4), (2, 3)], 18)
>>> net.apply(params, jax.numpy.ones((5, 4))).shape
(5, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._compile import fast_jit, one_program
from functional_nn._util._validation import check_array, check_finite, check_key
from functional_nn.lecture._activations import ACTIVATIONS, Activation, get_activation

OUTPUTS = ("sigmoid", "identity", "softmax")
"""Output activations a :class:`Network` accepts."""


class Layer(NamedTuple):
    """One layer's parameters (or their gradients): ``W`` of shape ``(H_l, H_{l-1})``, ``b``
    of shape ``(H_l,)`` or ``None`` for a network without bias."""

    W: jax.Array
    b: jax.Array | None


Params = tuple[Layer, ...]
"""The parameters of a network: one :class:`Layer` per layer ``l = 1 .. L+1``."""


class Trace(NamedTuple):
    """Every intermediate of a forward pass, indexed as in the lecture.

    Attributes:
        z: ``(None, z(1), ..., z(L+1))``: ``z[l]`` is the pre-activation of layer ``l``, shape
            ``(H_l,)`` or ``(N, H_l)``; ``z[0]`` is ``None`` (the input has none).
        h: ``(x, h(1), ..., h(L+1))``: ``h[l]`` is layer ``l``'s output, ``h[L+1] = y_hat``.
    """

    z: tuple[jax.Array | None, ...]
    h: tuple[jax.Array, ...]


@dataclass(frozen=True)
class Network:
    """A fully connected network ``sizes = (D, H_1, ..., H_L, O)``.

    Frozen and hashable: pass it as a static argument of :func:`jax.jit`.

    Args:
        sizes: layer widths, input first and output last; at least two entries, all >= 1.
        hidden: activation of the hidden layers: ``"sigmoid"`` (the lecture's), ``"relu"``,
            ``"tanh"`` or ``"identity"``.
        output: activation of the output layer: ``"sigmoid"`` (classification),
            ``"identity"`` (regression) or ``"softmax"`` (multi-class, with ``cross_entropy``).
        bias: whether each layer has a bias ``b(l)`` (the lecture's networks do not).
    """

    sizes: tuple[int, ...]
    hidden: str = "sigmoid"
    output: str = "sigmoid"
    bias: bool = True

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (int, str)) or not hasattr(sizes, "__len__"):
            raise ValueError(
                f"Network: sizes must be a sequence of ints (D, ..., O); got {sizes!r}"
            )
        if len(sizes) < 2 or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise ValueError(
                "Network: sizes must hold at least two positive ints (D, H_1, ..., H_L, O); "
                f"got {tuple(sizes)!r}"
            )
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        for name in ("hidden", "output"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(
                    f"Network: {name} must be the name of an activation (a str); got {value!r} "
                    f"({type(value).__name__})"
                )
        if self.hidden not in ACTIVATIONS:
            get_activation(self.hidden)  # an unknown name: the error lists the known ones
            raise ValueError(
                f"Network: hidden={self.hidden!r} is not elementwise; a hidden layer takes one "
                f"of {sorted(ACTIVATIONS)}"
            )
        if self.output not in OUTPUTS:
            raise ValueError(
                f"Network: unknown output activation {self.output!r}; expected one of {OUTPUTS}"
            )
        if self.output == "softmax" and self.sizes[-1] < 2:
            raise ValueError(
                f"Network: a softmax output needs O >= 2 classes; got sizes={self.sizes} (a "
                "softmax over one class is always 1: use output='sigmoid' with bce)"
            )
        if not isinstance(self.bias, bool):
            raise ValueError(f"Network: bias must be True or False; got {self.bias!r}")

    # -- shape of the network --------------------------------------------------------------------

    @property
    def D(self) -> int:
        """Input dimension ``H_0``."""
        return self.sizes[0]

    @property
    def O(self) -> int:
        """Output dimension ``H_{L+1}``."""
        return self.sizes[-1]

    @property
    def L(self) -> int:
        """Number of hidden layers."""
        return len(self.sizes) - 2

    def activation(self, l: int) -> Activation:
        """The activation of layer ``l`` (1-based): hidden for ``l <= L``, output for ``L+1``."""
        if not 1 <= l <= self.L + 1:
            raise ValueError(f"Network.activation: layer l={l} not in 1..{self.L + 1}")
        return get_activation(self.output if l == self.L + 1 else self.hidden)

    def num_params(self) -> int:
        """``P``, the number of scalar parameters."""
        pairs = zip(self.sizes[1:], self.sizes[:-1], strict=True)
        return sum(out * inp + (out if self.bias else 0) for out, inp in pairs)

    # -- parameters ------------------------------------------------------------------------------

    def init(self, key: jax.Array, dtype: Any = None) -> Params:
        r"""Random parameters: Glorot-normal weights, zero biases; He-normal for ReLU layers.

        :math:`W^{(l)}_{ij} \sim \mathcal N(0, s^2)` with :math:`s^2 = 2 / (H_{l-1} + H_l)`
        (Glorot, for sigmoid, tanh and identity layers) or :math:`s^2 = 2 / H_{l-1}` (He, for
        ReLU layers). The same key gives the same parameters. Called with a concrete key,
        it runs as one program compiled per (network, dtype), with XLA's fast options for up
        to 100,000 parameters (half the cold compile time); inside ``jit`` or ``vmap`` it is
        part of the caller's program (values may then differ in the last bit).

        Args:
            key: a JAX PRNG key (``jax.random.key(seed)``).
            dtype: floating dtype; JAX's default float dtype when ``None``.

        Returns:
            ``params``: a tuple of ``L+1`` :class:`Layer`.
        """
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64 if dtype is None else dtype)  # no array
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(f"Network.init: dtype must be a float dtype; got {dtype}")
        check_key(key, "key", "Network.init")
        if isinstance(key, jax.core.Tracer):  # inside jit, vmap or grad: part of that program
            return _init(self, key, dtype)
        init = _init_small if self.num_params() <= _SMALL_INIT else _init_large
        return init(self, key, dtype)  # one compiled program per (network, dtype)

    def check_params(self, params: Any, where: str = "Network", values: bool = True) -> None:
        """Raise ``ValueError`` listing every way ``params`` does not fit this network.

        ``params`` must be a tuple (not a list: gradients come back as a tuple, so a list
        would not compare leaf by leaf) of one :class:`Layer` per layer, with floating
        leaves of the right shapes; with ``values``, concrete leaves must also be finite
        (checked where they live, see :func:`~functional_nn._util._validation.value_stats`).
        """
        if not isinstance(params, tuple):
            hint = " (use tuple(params))" if isinstance(params, list) else ""
            raise ValueError(
                f"{where}: params must be a tuple of Layer(W, b), one per layer; "
                f"got {type(params).__name__}{hint} (sizes={self.sizes})"
            )
        if len(params) != self.L + 1:
            raise ValueError(
                f"{where}: params has {len(params)} layers but the network has {self.L + 1} "
                f"(sizes={self.sizes}): one Layer(W, b) per weight matrix"
            )
        problems = []
        for l, layer in enumerate(params, start=1):
            if not isinstance(layer, Layer):
                problems.append(f"params[{l - 1}] is a {type(layer).__name__}, not a Layer(W, b)")
                continue
            want_W = (self.sizes[l], self.sizes[l - 1])
            if jnp.shape(layer.W) != want_W:
                problems.append(
                    f"params[{l - 1}].W (W({l})) has shape {jnp.shape(layer.W)}, expected {want_W}"
                )
            if self.bias and layer.b is None:
                problems.append(f"params[{l - 1}].b is None but the network has bias=True")
            elif not self.bias and layer.b is not None:
                problems.append(f"params[{l - 1}].b is set but the network has bias=False")
            elif self.bias and jnp.shape(layer.b) != (self.sizes[l],):
                problems.append(
                    f"params[{l - 1}].b (b({l})) has shape {jnp.shape(layer.b)}, "
                    f"expected {(self.sizes[l],)}"
                )
            for leaf_name, leaf in (("W", layer.W), ("b", layer.b)):
                dtype = getattr(leaf, "dtype", None) if leaf is not None else None
                if leaf is not None and (dtype is None or not jnp.issubdtype(dtype, jnp.inexact)):
                    problems.append(
                        f"params[{l - 1}].{leaf_name} has dtype {dtype or type(leaf).__name__}; "
                        "parameters must be floating-point arrays"
                    )
        if problems:
            raise ValueError(
                f"{where}: params do not fit the network "
                f"(sizes={self.sizes}, bias={self.bias}):\n  " + "\n  ".join(problems)
            )
        if values:
            for l, (W, b) in enumerate(params):
                check_finite(W, f"params[{l}].W", where)
                if b is not None:
                    check_finite(b, f"params[{l}].b", where)

    def check_x(self, x: Any, where: str = "Network", values: bool = True) -> None:
        """Raise unless ``x`` is a numeric array of shape ``(D,)`` or ``(N, D)`` with
        ``N >= 1`` (and, when concrete and ``values``, only finite entries: counted where
        ``x`` lives, never copied to the host)."""
        check_array(x, "x", where, " of shape (N, D) or (D,)")
        shape = jnp.shape(x)
        if len(shape) not in (1, 2) or shape[-1] != self.D:
            raise ValueError(
                f"{where}: x has shape {shape} but the network expects D={self.D} inputs, "
                f"as (D,) or (N, D) (sizes={self.sizes})"
            )
        if len(shape) == 2 and shape[0] == 0:
            raise ValueError(f"{where}: x is an empty batch, shape {shape}; give N >= 1 samples")
        if values:
            check_finite(x, "x", where)

    # -- forward pass ----------------------------------------------------------------------------

    def trace(self, params: Params, x: jax.Array) -> Trace:
        """The forward pass, keeping every ``z(l)`` and ``h(l)``.

        Args:
            params: one :class:`Layer` per layer.
            x: shape ``(D,)`` or ``(N, D)``.

        Returns:
            :class:`Trace` with ``z[l]``, ``h[l]`` of shape ``(H_l,)`` or ``(N, H_l)``.
        """
        self.check_params(params, "Network.trace")
        self.check_x(x, "Network.trace")
        return _forward(self, params, x)

    def forward(self, params: Params, x: jax.Array, *, output: bool = True) -> Trace:
        """:meth:`trace` without the argument checks, for callers that made them already.

        ``output=False`` leaves the output activation out (``h[L+1]`` is ``None``), for a
        caller that reads only the logits ``z(L+1)``: a loss fused with the output.
        """
        h, zs, hs = x, [None], [x]
        for l, (W, b) in enumerate(params, start=1):
            z = h @ W.T  # (N, H_l)
            if b is not None:
                z = z + jnp.broadcast_to(b, z.shape)
            h = self.activation(l).fn(z) if output or l <= self.L else None
            zs.append(z)
            hs.append(h)
        return Trace(tuple(zs), tuple(hs))

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """``y_hat``: shape ``(O,)`` for a sample ``(D,)``, ``(N, O)`` for a batch ``(N, D)``."""
        return self.trace(params, x).h[-1]

    __call__ = apply


def _init(net: Network, key: jax.Array, dtype) -> Params:
    """The body of :meth:`Network.init`."""
    keys = jax.random.split(key, net.L + 1)
    params = []
    for l, k in enumerate(keys, start=1):
        fan_in, fan_out = net.sizes[l - 1], net.sizes[l]
        he = net.activation(l).name == "relu"
        std = math.sqrt(2.0 / fan_in) if he else math.sqrt(2.0 / (fan_in + fan_out))
        W = std * jax.random.normal(k, (fan_out, fan_in), dtype)
        b = jnp.zeros((fan_out,), dtype) if net.bias else None
        params.append(Layer(W, b))
    return tuple(params)


_SMALL_INIT = 100_000
"""Networks up to this many parameters are initialised by a program compiled with
:func:`~functional_nn._compile._options.fast_compile_options` (a cold ``init``
compiles faster); larger ones get XLA's optimized random-number code."""
_init_large = jax.jit(_init, static_argnums=(0, 2))
_init_small = fast_jit(_init, static_argnums=(0, 2))


@one_program(1)
def _forward(net: Network, params: Params, x: jax.Array) -> Trace:
    """:meth:`Network.forward` of checked arguments."""
    return net.forward(params, x)


def num_params(params: Params) -> int:
    """``P``: the number of scalars in a params (or gradient) tree.

    >>> import jax.numpy as jnp
    >>> num_params((Layer(jnp.zeros((3, 4)), None), Layer(jnp.zeros((2, 3)), jnp.zeros(2))))
    20
    """
    return sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params))


def equivalent_linear_map(
    params: Params, net: Network | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""The lecture's collapse: a network without activations is one linear map.

    .. math::

        \hat y = W^{(L+1)} \cdots W^{(1)} x + b_{eq} = W_{eq} x + b_{eq}, \qquad
        b_{eq} = \sum_l W^{(L+1)} \cdots W^{(l+1)} b^{(l)}

    Args:
        params: one :class:`Layer` per layer.
        net: the network ``params`` belong to; when given, it must have ``hidden="identity"``
            (or no hidden layer) and ``output="identity"``, since any other network is not
            linear. Without it, ``params`` are read as those of a linear network.

    Returns:
        ``(W_eq, b_eq)`` of shapes ``(O, D)`` and ``(O,)`` (zeros without bias).

    >>> import jax
    >>> net = Network((4, 3, 2), hidden="identity", output="identity")
    >>> W_eq, b_eq = equivalent_linear_map(net.init(jax.random.key(0)), net)
    >>> W_eq.shape, b_eq.shape
    ((2, 4), (2,))
    """
    if net is not None:
        if (net.L > 0 and net.hidden != "identity") or net.output != "identity":
            raise ValueError(
                "equivalent_linear_map: only a network whose activations are all identity is a "
                f"linear map; got hidden={net.hidden!r}, output={net.output!r} "
                "(use Network(sizes, hidden='identity', output='identity'))"
            )
        net.check_params(params, "equivalent_linear_map")
    elif (
        not isinstance(params, tuple) or not params or not all(isinstance(p, Layer) for p in params)
    ):
        raise ValueError(
            "equivalent_linear_map: params must be a non-empty tuple of Layer(W, b), one per "
            f"layer; got {params!r:.80}"
        )
    for l, (W, b) in enumerate(params):
        check_finite(W, f"params[{l}].W", "equivalent_linear_map")
        if b is not None:
            check_finite(b, f"params[{l}].b", "equivalent_linear_map")
    W_eq = params[0].W
    b_eq = params[0].b if params[0].b is not None else jnp.zeros(W_eq.shape[0], W_eq.dtype)
    for W, b in params[1:]:
        if W.shape[1] != W_eq.shape[0]:
            raise ValueError(
                f"equivalent_linear_map: W of shape {W.shape} cannot follow a layer with "
                f"{W_eq.shape[0]} outputs"
            )
        W_eq = W @ W_eq  # (H_l, D)
        b_eq = W @ b_eq + (b if b is not None else 0)  # (H_l,)
    return W_eq, b_eq
