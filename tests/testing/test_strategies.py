"""functional_nn.testing's strategies: the trees they draw, their refusals, and the checkers
over them (a right gradient passes on every tree drawn; 5% off in one leaf fails that leaf
alone)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import functional_nn as fnn
from functional_nn.testing import HELD_KINDS, array_leaves, params_trees


def inexact(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def f(tree):
    """A real scalar of every inexact leaf (complex ones through |z|^2 and Re z)."""
    total = 0.0
    for leaf in jax.tree_util.tree_leaves(tree):
        if inexact(leaf):
            x = leaf.astype(jnp.result_type(leaf, jnp.float32))
            total = total + jnp.sum(jnp.real(x * jnp.conj(x)) / 2 + jnp.sin(jnp.real(x)))
    return total


@settings(max_examples=30)
@given(params_trees(dtypes=("float16", "bfloat16", "float32", "float64", "complex128"),
                    max_leaves=5, held=HELD_KINDS), st.data())  # fmt: skip
def test_trees_hold_what_was_asked(tree, data):
    assert set(tree) == {"params", *HELD_KINDS}
    assert jnp.issubdtype(jax.random.key_data(tree["key"]).dtype, jnp.unsignedinteger)
    assert isinstance(tree["step"], int) and tree["counts"].dtype == jnp.int32
    leaves = jax.tree_util.tree_leaves(tree["params"])
    assert 1 <= len(leaves) <= 5
    for leaf in leaves:
        assert leaf.dtype.name in ("float16", "bfloat16", "float32", "float64", "complex128")
        assert leaf.ndim <= 2 and all(1 <= n <= 4 for n in leaf.shape)
        x = np.asarray(leaf.astype(jnp.complex128))
        assert (
            np.all(np.isfinite(x)) and np.all(np.abs(x.real) <= 2) and np.all(np.abs(x.imag) <= 2)
        )


@settings(max_examples=40)
@given(array_leaves(("float16", "bfloat16", "float32", "complex64"), max_dims=1, max_side=3,
                    bound=60000.0))  # fmt: skip
def test_values_are_finite_and_normal_or_zero_in_the_leafs_own_dtype(leaf):
    """Drawn in float64 and cast: a value below the dtype's smallest normal would be a
    subnormal there (1e-45 in float32); it is drawn as 0, and a bound within the dtype's range
    keeps every value finite (float16's largest is 65504)."""
    parts = np.asarray(leaf.astype(jnp.complex64)) if leaf.dtype == jnp.complex64 else None
    values = [parts.real, parts.imag] if parts is not None else [np.asarray(leaf, np.float64)]
    tiny = float(jnp.finfo(leaf.dtype).tiny)
    for x in values:
        assert np.all(np.isfinite(x)) and np.all(np.abs(x) <= 60000.0)
        assert np.all((x == 0) | (np.abs(x) >= tiny)), (leaf.dtype, x)


def test_containers_dtypes_and_shapes_are_all_reached():
    seen = {"dict": False, "list": False, "tuple": False, "scalar": False, "complex64": False}

    @settings(max_examples=60)
    @given(params_trees(dtypes=("float32", "complex64"), max_leaves=6))
    def draw(tree):
        stack = [tree]
        while stack:
            node = stack.pop()
            for kind in (dict, list, tuple):
                if isinstance(node, kind):
                    seen[kind.__name__] = True
                    stack.extend(node.values() if kind is dict else node)
            if isinstance(node, jax.Array):
                seen["scalar"] |= node.ndim == 0
                seen["complex64"] |= node.dtype == jnp.complex64

    draw()
    assert all(seen.values()), seen


@settings(max_examples=6, phases=(Phase.explicit, Phase.reuse, Phase.generate), deadline=None)
@given(params_trees(dtypes=("float32", "float64", "complex128"), max_leaves=3,
                    held=("key", "step")), st.data())  # fmt: skip
def test_check_grad_passes_a_right_gradient_and_names_a_wrong_leaf_on_drawn_trees(tree, data):
    assert fnn.check_grad(f, tree, taylor=False).ok
    paths = [p for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0] if inexact(leaf)]
    wrong = data.draw(st.sampled_from(paths))

    def grad(p):
        g = jax.grad(f, allow_int=True)(p)
        return jax.tree_util.tree_map_with_path(lambda q, a: a * 1.05 if q == wrong else a, g)

    report = fnn.check_grad(f, tree, grad=grad, taylor=False, locate=False)
    failed = {r.leaf for r in report.rows if r.status == "fail"}
    assert failed and all(name.startswith(jax.tree_util.keystr(wrong)) for name in failed), (
        failed,
        jax.tree_util.keystr(wrong),
    )


def test_an_equinox_mlp_is_drawn_and_checked():
    eqx = pytest.importorskip("equinox")

    @settings(max_examples=3)
    @given(params_trees(dtypes=("float64",), equinox=True))
    def check(model):
        assert isinstance(model, eqx.nn.MLP)
        x = jnp.linspace(-1.0, 1.0, model.in_size)
        loss = lambda m: jnp.sum(m(x) ** 2)  # noqa: E731
        assert fnn.check_grad(loss, model, taylor=False).ok

    check()


def test_bad_requests_are_refused_with_what_was_expected():
    with pytest.raises(ValueError, match=r"dtypes \['int32'\] are not among"):
        params_trees(dtypes=("int32",))
    with pytest.raises(
        ValueError, match=r"held \['rng'\] are not among \('key', 'step', 'counts'\)"
    ):
        params_trees(held=("rng",))
    with pytest.raises(ValueError, match=r"max_leaves must be in \[1, 64\]; got 0"):
        params_trees(max_leaves=0)
    with pytest.raises(ValueError, match="dtypes is empty"):
        array_leaves(())
    with pytest.raises(ValueError, match="1 <= min_side <= max_side"):
        array_leaves(min_side=3, max_side=2)
    with pytest.raises(ValueError, match="a real dtype comes first; got complex64"):
        params_trees(dtypes=("complex64",), equinox=True)
    with pytest.raises(ValueError, match=r"dtype 'flaot32' is not a dtype; expected one of"):
        params_trees(dtypes=("flaot32",))
    with pytest.raises(ValueError, match="dtypes must be a sequence of names such as"):
        params_trees(dtypes="float32")  # a bare string, not ('float32',)
    with pytest.raises(ValueError, match="held must be a sequence of names such as"):
        params_trees(held="key")
    with pytest.raises(ValueError, match="held names a kind twice"):
        params_trees(held=("key", "key"))
    with pytest.raises(ValueError, match=r"max_leaves must be an int in \[1, 64\]; got 2.5"):
        params_trees(max_leaves=2.5)
    with pytest.raises(ValueError, match=r"params_trees: max_side must be in \[1, 64\]; got 0"):
        params_trees(max_side=0)
    with pytest.raises(ValueError, match=r"max_dims must be in \[0, 8\]; got 40"):
        array_leaves(max_dims=40)
    with pytest.raises(ValueError, match="bound must be a positive finite number; got -1"):
        params_trees(bound=-1)
    with pytest.raises(ValueError, match="bound 100000.0 exceeds float16's largest finite"):
        array_leaves(("float32", "float16"), bound=1e5)
    with pytest.raises(ValueError, match="equinox must be True or False; got 'yes'"):
        params_trees(equinox="yes")
    with pytest.raises(ValueError, match="equinox=True draws one model in one dtype"):
        params_trees(dtypes=("float32", "float16"), equinox=True)


def test_float64_without_x64_is_refused_not_made_float32(monkeypatch):
    import functional_nn.testing._strategies as strategies

    monkeypatch.setattr(strategies, "x64", lambda: False)  # a process with x64 off
    with pytest.raises(ValueError, match=r"\['float64'\] leaves need x64, which is off"):
        params_trees(dtypes=("float32", "float64"))
