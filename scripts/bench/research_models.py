r"""Research-scale models for the ``checkers_scale`` section, in pure JAX, and planted bugs.

Each builder returns ``(f, params)``: ``f(params)`` is a float32 scalar loss and ``params`` a
pytree held the way research code holds it (a list of dicts, nested dicts), the data closed
over. Nothing here imports ``functional_nn``: these are the functions a user brings to
``fnn.check_grad`` or to ``jax.test_util.check_grads``.

- :func:`tanh_mlp`: ``h_0 = x``, :math:`h_l = \tanh(h_{l-1} W_l + b_l)`, ``f = mean(h_L^2)``.
- :func:`transformer`: a decoder-only language model (pre-norm blocks, causal attention, a
  4x MLP with GELU), cross-entropy of next-token prediction on integer tokens.
- :func:`plant`: ``jax.grad(f)`` with one whole leaf wrong (sign, scale, transpose, zero),
  the bug a checker must name; :func:`bug_leaves` picks one leaf per kind for each model.

:data:`MODELS` names the sizes the benchmark runs (and :data:`TINY`, a transformer small enough
for today's engine, to test the code). Every array is float32 or int32, whatever JAX's x64
mode (``bench`` turns it on). Biases broadcast as research code writes them: under
``jax_numpy_rank_promotion="raise"`` run them inside ``jax.numpy_rank_promotion("allow")``.

>>> f, params = tanh_mlp(8, 2, batch=4)
>>> size(params)
(144, 4)
>>> bug_leaves(params)["transpose"]
"[1]['W']"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

KINDS = ("sign", "scale", "transpose", "zero")
"""The planted whole-leaf bugs: the leaf's gradient negated, times 1.05, transposed, zeroed."""

SCALE = 1.05


def size(params) -> tuple[int, int]:
    """``(P, L)``: the parameter count and the leaf count of a pytree."""
    leaves = jax.tree_util.tree_leaves(params)
    return sum(int(a.size) for a in leaves), len(leaves)


def _normal(key, shape, fan_in: int) -> jax.Array:
    """Standard normal over sqrt(fan_in), float32."""
    return jax.random.normal(key, shape, jnp.float32) / jnp.sqrt(jnp.float32(fan_in))


# -- tanh MLP -------------------------------------------------------------------------------------


def tanh_mlp(width: int, depth: int, batch: int = 32, seed: int = 0):
    r"""A square tanh MLP and ``f = mean(h_L ** 2)``.

    .. math:: h_0 = x, \quad h_l = \tanh(h_{l-1} W_l + b_l), \quad f = \mathrm{mean}(h_L^2)

    Args:
        width: H, every layer's width; depth: L, the number of layers.
        batch: N, rows of the standard-normal input ``x`` (N, H), closed over.
        seed: the PRNG seed of ``x`` and the parameters.

    Returns:
        ``(f, params)``: params a list of L dicts ``{"W": (H, H), "b": (H,)}``, ``W`` normal
        over :math:`\sqrt{H}` (tanh stays off its flat tails), ``b`` normal times 0.1.
    """
    kx, *keys = jax.random.split(jax.random.key(seed), 2 * depth + 1)
    x = jax.random.normal(kx, (batch, width), jnp.float32)
    params = [
        {
            "W": _normal(kW, (width, width), width),
            "b": 0.1 * jax.random.normal(kb, (width,), jnp.float32),
        }
        for kW, kb in zip(keys[::2], keys[1::2], strict=True)
    ]

    def f(params):
        h = x
        for layer in params:
            h = jnp.tanh(h @ layer["W"] + layer["b"])  # (N, H)
        return jnp.mean(h**2)

    return f, params


# -- transformer ----------------------------------------------------------------------------------


def _layer_norm(x, p, eps: float = 1e-5):
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _attention(x, p, n_heads: int):
    """Causal multi-head self-attention of ``x`` (N, S, D)."""
    N, S, D = x.shape
    q, k, v = (
        (x @ p[W]).reshape(N, S, n_heads, D // n_heads) for W in ("Wq", "Wk", "Wv")
    )  # (N, S, heads, D / heads)
    logits = jnp.einsum("nshd,nthd->nhst", q, k) / jnp.sqrt(jnp.float32(D // n_heads))
    causal = jnp.tril(jnp.ones((S, S), bool))
    logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)  # (N, heads, S, S)
    out = jnp.einsum("nhst,nthd->nshd", jax.nn.softmax(logits, axis=-1), v)
    return out.reshape(N, S, D) @ p["Wo"]


def _block(x, p, n_heads: int, activation: Callable = jax.nn.gelu):
    """A pre-norm block: ``x + attention(ln(x))``, then ``x + mlp(ln(x))``."""
    x = x + _attention(_layer_norm(x, p["ln1"]), p["attn"], n_heads)
    m = p["mlp"]
    h = activation(_layer_norm(x, p["ln2"]) @ m["W1"] + m["b1"])  # (N, S, 4D)
    return x + h @ m["W2"] + m["b2"]


def _norm(D: int) -> dict:
    """A layer norm's parameters at the identity: scale ones, bias zeros."""
    return {"scale": jnp.ones(D, jnp.float32), "bias": jnp.zeros(D, jnp.float32)}


def _init_block(key, D: int) -> dict:
    k = jax.random.split(key, 6)
    return {
        "ln1": _norm(D),
        "attn": {W: _normal(k[i], (D, D), D) for i, W in enumerate(("Wq", "Wk", "Wv", "Wo"))},
        "ln2": _norm(D),
        "mlp": {
            "W1": _normal(k[4], (D, 4 * D), D),
            "b1": jnp.zeros(4 * D, jnp.float32),
            "W2": _normal(k[5], (4 * D, D), 4 * D),
            "b2": jnp.zeros(D, jnp.float32),
        },
    }


def transformer(
    d_model: int,
    n_layers: int,
    vocab: int,
    seq: int,
    batch: int,
    seed: int = 0,
    n_heads: int = 4,
    activations: tuple[Callable, ...] | None = None,
):
    r"""A decoder-only transformer language model and its next-token cross-entropy.

    Tokens ``t`` (N, S + 1) uniform in ``[0, vocab)``, closed over; inputs ``t[:, :-1]``,
    targets ``t[:, 1:]``:

    .. math:: f = \frac{1}{NS} \sum_{n,s} \left(\log \sum_v e^{z_{nsv}} - z_{n,s,t_{n,s+1}}
        \right), \quad z = \mathrm{ln}_f(\mathrm{blocks}(E[t] + P)) U

    Args:
        d_model: D; n_layers: blocks; vocab: V; seq: S; batch: N; n_heads: heads (D divisible
            by it); seed: the PRNG seed of the tokens and the parameters.

    Returns:
        ``(f, params)``: params ``{"embed": (V, D), "pos": (S, D), "blocks": [per block
        {"ln1": {"scale", "bias"}, "attn": {"Wq", "Wk", "Wv", "Wo"}, "ln2": ..., "mlp": {"W1"
        (D, 4D), "b1", "W2" (4D, D), "b2"}}], "ln_f": {"scale", "bias"}, "unembed": (D, V)}``:
        :math:`12 D^2 + 9 D` per block, :math:`2 V D + S D + 2 D` besides; 12 leaves per block,
        5 besides.
    """
    if d_model % n_heads:
        raise ValueError(f"transformer: d_model={d_model} is not divisible by n_heads={n_heads}")
    kt, ke, kp, ku, *kb = jax.random.split(jax.random.key(seed), 4 + n_layers)
    tokens = jax.random.randint(kt, (batch, seq + 1), 0, vocab, jnp.int32)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (N, S)
    D = d_model
    params = {
        "embed": 0.02 * jax.random.normal(ke, (vocab, D), jnp.float32),
        "pos": 0.02 * jax.random.normal(kp, (seq, D), jnp.float32),
        "blocks": [_init_block(k, D) for k in kb],
        "ln_f": _norm(D),
        "unembed": _normal(ku, (D, vocab), D),
    }

    acts = activations if activations is not None else (jax.nn.gelu,) * n_layers
    if len(acts) != n_layers:
        raise ValueError(f"transformer: {len(acts)} activations for {n_layers} blocks")

    def f(params):
        x = params["embed"][inputs] + params["pos"]  # (N, S, D)
        for p, act in zip(params["blocks"], acts, strict=True):
            x = _block(x, p, n_heads, act)
        z = _layer_norm(x, params["ln_f"]) @ params["unembed"]  # (N, S, V)
        picked = jnp.take_along_axis(z, targets[..., None], axis=-1)[..., 0]  # (N, S)
        return jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)

    return f, params


TRANSFORMER_1M = dict(d_model=128, n_layers=3, vocab=1536, seq=32, batch=8)
"""990,848 parameters in 41 leaves."""

TRANSFORMER_10M = dict(d_model=256, n_layers=8, vocab=7168, seq=64, batch=4)
"""9,996,800 parameters in 101 leaves."""

TRANSFORMER_100M = dict(d_model=768, n_layers=12, vocab=8192, seq=128, batch=4)
"""97,700,352 parameters in 149 leaves (GPT-2 small's shape with a smaller vocabulary): the
accelerator's check (``scripts/check_model.py``, run by ``scripts/gpu_check.sh``)."""

TINY = dict(d_model=32, n_layers=1, vocab=64, seq=8, batch=2)
"""16,992 parameters in 17 leaves: above ``DIRECTIONAL_ABOVE`` (random directions per leaf),
small enough for any engine."""

MODELS: dict[str, Callable[[], tuple[Callable, Any]]] = {
    "mlp 256x4": lambda: tanh_mlp(256, 4),
    "mlp 512x4": lambda: tanh_mlp(512, 4),
    "mlp 256x16": lambda: tanh_mlp(256, 16),
    "transformer 1M": lambda: transformer(**TRANSFORMER_1M),
    "transformer 10M": lambda: transformer(**TRANSFORMER_10M),
    "transformer tiny": lambda: transformer(**TINY),
}
"""The benchmark's models by name: ``MODELS[name]()`` is ``(f, params)``."""


def gelu_rule(factor: float = 1.0) -> Callable:
    """``jax.nn.gelu`` under a ``jax.custom_vjp`` written by hand (as a model's stable or
    fused activation is), its backward ``factor`` times right (1: right)."""

    @jax.custom_vjp
    def gelu(x):
        return jax.nn.gelu(x)

    def bwd(x, c):
        return (factor * jax.vjp(jax.nn.gelu, x)[1](c)[0],)

    gelu.defvjp(lambda x: (jax.nn.gelu(x), x), bwd)
    return gelu


def ruled_transformer(config: dict, wrong_block: int = 1):
    """:func:`transformer` of ``config`` whose MLP activation is :func:`gelu_rule` in every
    block, block ``wrong_block``'s (0-based: 1 is block 2) 5% off: the model of ``locate``'s
    cost figure (``scripts/benchmark.py --only locate``)."""
    acts = tuple(gelu_rule(1.05 if i == wrong_block else 1.0) for i in range(config["n_layers"]))
    return transformer(**config, activations=acts)


RULED = {
    "transformer 1M": lambda: ruled_transformer(TRANSFORMER_1M),
    "transformer 10M": lambda: ruled_transformer(TRANSFORMER_10M),
    "transformer tiny": lambda: ruled_transformer({**TINY, "n_layers": 3}),
}
"""The models of the locate section by name, each with one wrong rule in block 2."""


# -- planted bugs ---------------------------------------------------------------------------------


def leaf_path(path) -> str:
    """A leaf's path as ``fnn`` reports it: ``jax.tree_util.keystr``, ``"(root)"`` for none."""
    return jax.tree_util.keystr(path) or "(root)"


def bug_leaves(params) -> dict[str, str]:
    """One leaf per kind of :data:`KINDS`, as ``fnn`` names it, for a model of this module.

    MLP (a list of L layers): ``sign`` layer 2's bias, ``scale`` layer 1's weight,
    ``transpose`` the middle layer's weight, ``zero`` the last layer's bias. Transformer:
    ``sign`` block 1's first layer-norm bias, ``scale`` the last block's first MLP matrix,
    ``transpose`` block 1's query projection, ``zero`` the last block's second MLP bias.
    """
    if isinstance(params, list):
        L = len(params)
        chosen = {"sign": (min(1, L - 1), "b"), "scale": (0, "W"),
                  "transpose": (L // 2, "W"), "zero": (L - 1, "b")}  # fmt: skip
        return {kind: f"[{l}]['{name}']" for kind, (l, name) in chosen.items()}
    last = len(params["blocks"]) - 1
    return {
        "sign": "['blocks'][0]['ln1']['bias']",
        "scale": f"['blocks'][{last}]['mlp']['W1']",
        "transpose": "['blocks'][0]['attn']['Wq']",
        "zero": f"['blocks'][{last}]['mlp']['b2']",
    }


def _alter(kind: str, g: jax.Array) -> jax.Array:
    if kind == "sign":
        return -g
    if kind == "scale":
        return SCALE * g
    if kind == "transpose":
        return g.T
    return jnp.zeros_like(g)


def plant(f: Callable, params, kind: str, path: str) -> Callable:
    """``jax.grad(f)`` with the leaf at ``path`` wrong as ``kind`` says; the others right.

    Args:
        f: ``params -> scalar``; params: a point of ``f``, for the leaf's shape.
        kind: one of :data:`KINDS`; ``"transpose"`` needs a square matrix.
        path: the leaf, as ``fnn`` names it (``"[1]['b']"``, see :func:`bug_leaves`).

    Returns:
        ``params -> gradient pytree``, traceable.

    Raises:
        ValueError: an unknown kind, a path that names no leaf, or a leaf that is not square
            for ``"transpose"``.
    """
    if kind not in KINDS:
        raise ValueError(f"plant: kind must be one of {KINDS}; got {kind!r}")
    shapes = {leaf_path(p): a.shape for p, a in jax.tree_util.tree_flatten_with_path(params)[0]}
    if path not in shapes:
        raise ValueError(f"plant: no leaf at {path!r}; the leaves are {sorted(shapes)}")
    shape = shapes[path]
    if kind == "transpose" and (len(shape) != 2 or shape[0] != shape[1]):
        raise ValueError(f"plant: 'transpose' needs a square matrix; {path} has shape {shape}")

    def grad(p):
        return jax.tree_util.tree_map_with_path(
            lambda q, g: _alter(kind, g) if leaf_path(q) == path else g, jax.grad(f)(p)
        )

    return grad
