"""Network: shapes, initialisation, the forward pass, the linear collapse, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import Layer, Network, equivalent_linear_map, num_params, sigmoid


def test_lecture_network_has_18_parameters(key):
    net = Network((4, 3, 2), bias=False)
    params = net.init(key)
    assert [p.W.shape for p in params] == [(3, 4), (2, 3)]
    assert all(p.b is None for p in params)
    assert num_params(params) == net.num_params() == 18  # P = H*D + O*H
    assert Network((4, 3, 2)).num_params() == 18 + 3 + 2


def test_logistic_regression_is_sigmoid_of_w_dot_x(key):
    net = Network((5, 1), bias=False)
    params = net.init(key)
    x = jax.random.normal(jax.random.key(1), (7, 5))
    w = params[0].W[0]
    np.testing.assert_allclose(net.apply(params, x)[:, 0], sigmoid(x @ w), rtol=1e-15)


def test_init_is_deterministic_and_scaled(key):
    net = Network((400, 300, 1), hidden="relu")
    a, b = net.init(key), net.init(key)
    assert all(bool(jnp.all(p.W == q.W)) for p, q in zip(a, b, strict=True))
    assert not bool(jnp.all(net.init(jax.random.key(1))[0].W == a[0].W))
    np.testing.assert_allclose(jnp.std(a[0].W), np.sqrt(2 / 400), rtol=0.02)  # He
    sig = Network((400, 300, 1)).init(key)
    np.testing.assert_allclose(jnp.std(sig[0].W), np.sqrt(2 / 700), rtol=0.02)  # Glorot
    assert bool(jnp.all(a[0].b == 0))


def test_init_follows_dtype(key):
    assert Network((3, 2)).init(key, jnp.float32)[0].W.dtype == jnp.float32
    assert Network((3, 2)).init(key)[0].W.dtype == jnp.float64  # x64 is on in tests
    with pytest.raises(ValueError, match="float dtype"):
        Network((3, 2)).init(key, jnp.int32)


def test_sample_and_batch_agree(key):
    net = Network((4, 5, 3, 2), hidden="tanh", output="identity")
    params = net.init(key)
    x = jax.random.normal(jax.random.key(1), (6, 4))
    batch = net.apply(params, x)
    assert batch.shape == (6, 2)
    for n in range(6):
        np.testing.assert_allclose(net.apply(params, x[n]), batch[n], rtol=1e-13, atol=1e-15)


def test_trace_follows_the_lectures_indices(key):
    net = Network((4, 5, 3, 2), hidden="relu")
    params = net.init(key)
    x = jax.random.normal(jax.random.key(1), (6, 4))
    tr = net.trace(params, x)
    assert tr.z[0] is None
    np.testing.assert_array_equal(tr.h[0], x)
    assert [z.shape for z in tr.z[1:]] == [(6, 5), (6, 3), (6, 2)]
    for l in (1, 2, 3):
        W, b = params[l - 1]
        np.testing.assert_allclose(tr.z[l], tr.h[l - 1] @ W.T + b[None], rtol=1e-15)
        np.testing.assert_array_equal(tr.h[l], net.activation(l).fn(tr.z[l]))
    np.testing.assert_array_equal(tr.h[-1], net.apply(params, x))


def test_network_is_hashable_and_static_under_jit(key):
    net = Network([4, 3, 2])
    assert net.sizes == (4, 3, 2) and hash(net) == hash(Network((4, 3, 2)))
    params = net.init(key)
    f = jax.jit(lambda n, p, x: n.apply(p, x), static_argnums=0)
    np.testing.assert_allclose(f(net, params, jnp.ones(4)), net.apply(params, jnp.ones(4)))


def test_equivalent_linear_map_of_a_three_layer_identity_network(key):
    net = Network((4, 6, 5, 3), hidden="identity", output="identity")
    params = net.init(key)
    params = tuple(
        Layer(W, jax.random.normal(jax.random.key(i), b.shape)) for i, (W, b) in enumerate(params)
    )
    W_eq, b_eq = equivalent_linear_map(params, net)
    W1, W2, W3 = (p.W for p in params)
    np.testing.assert_allclose(W_eq, W3 @ W2 @ W1, rtol=1e-14)
    x = jax.random.normal(jax.random.key(9), (10, 4))
    np.testing.assert_allclose(
        x @ W_eq.T + b_eq[None], net.apply(params, x), rtol=1e-13, atol=1e-14
    )


def test_equivalent_linear_map_without_bias_has_zero_offset(key):
    net = Network((4, 3, 2), hidden="identity", output="identity", bias=False)
    W_eq, b_eq = equivalent_linear_map(net.init(key), net)
    assert W_eq.shape == (2, 4) and b_eq.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kw", [{"hidden": "relu", "output": "identity"}, {"output": "sigmoid"}])
def test_equivalent_linear_map_refuses_a_nonlinear_network(kw, key):
    net = Network((4, 3, 2), **{"hidden": "identity", **kw})
    with pytest.raises(ValueError, match="only a network whose activations are all identity"):
        equivalent_linear_map(net.init(key), net)


@pytest.mark.parametrize("params", [(), [], None, (jnp.ones((2, 2)),)])
def test_equivalent_linear_map_refuses_what_is_not_layers(params):
    with pytest.raises(ValueError, match="params must be a non-empty tuple of Layer"):
        equivalent_linear_map(params)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sizes": (4,)}, "at least two positive ints"),
        ({"sizes": (4, 0, 2)}, "at least two positive ints"),
        ({"sizes": (4, 2.5)}, "at least two positive ints"),
        ({"sizes": 4}, "sequence of ints"),
        ({"sizes": (4, 2), "hidden": "swish"}, "unknown activation 'swish'"),
        ({"sizes": (4, 2), "output": "relu"}, "unknown output activation 'relu'"),
        ({"sizes": (4, 3, 2), "hidden": "softmax"}, "hidden='softmax' is not elementwise"),
        ({"sizes": (4, 2), "bias": 1}, "bias must be True or False"),
        ({"sizes": (4, 2), "hidden": ["relu"]}, r"hidden must be the name .* got \['relu'\]"),
        ({"sizes": (4, 2), "output": None}, "output must be the name of an activation"),
        ({"sizes": (4, 1), "output": "softmax"}, "a softmax output needs O >= 2 classes"),
    ],
)
def test_bad_network_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Network(**kwargs)


@pytest.mark.parametrize(
    "x_shape, match",
    [((8, 3), r"x has shape \(8, 3\) but the network expects D=4 inputs"), ((2, 3, 4), "D=4")],
)
def test_x_of_wrong_width_or_rank(x_shape, match, key):
    net = Network((4, 3, 2))
    with pytest.raises(ValueError, match=match):
        net.apply(net.init(key), jnp.zeros(x_shape))


def test_non_finite_x_is_refused(key):
    net = Network((4, 3, 2))
    x = jnp.zeros((3, 4)).at[1, 2].set(jnp.nan)
    with pytest.raises(ValueError, match="x has 1 non-finite entries"):
        net.apply(net.init(key), x)


def test_params_that_do_not_fit(key):
    net = Network((4, 3, 2))
    params = net.init(key)
    with pytest.raises(ValueError, match="params has 1 layers but the network has 2"):
        net.apply(params[:1], jnp.zeros(4))
    with pytest.raises(ValueError, match="params must be a tuple of Layer"):
        net.apply({"W": params[0].W}, jnp.zeros(4))
    with pytest.raises(ValueError, match=r"params\[1\] is a tuple, not a Layer"):
        net.apply((params[0], tuple(params[1])), jnp.zeros(4))
    swapped = (params[0]._replace(W=params[0].W.T), params[1]._replace(b=jnp.zeros(3)))
    with pytest.raises(ValueError) as err:  # every mismatch in one error
        net.apply(swapped, jnp.zeros(4))
    assert r"params[0].W (W(1)) has shape (4, 3), expected (3, 4)" in str(err.value)
    assert r"params[1].b (b(2)) has shape (3,), expected (2,)" in str(err.value)
    with pytest.raises(ValueError, match="b is None but the network has bias=True"):
        net.apply(tuple(p._replace(b=None) for p in params), jnp.zeros(4))
    with pytest.raises(ValueError, match="b is set but the network has bias=False"):
        Network((4, 3, 2), bias=False).apply(params, jnp.zeros(4))


@pytest.mark.parametrize("bad", [0, None, jnp.zeros(3, jnp.uint32), "0"])
def test_init_names_a_key_that_is_not_a_prng_key(bad):
    with pytest.raises(TypeError, match=r"Network.init: key must be a JAX PRNG key"):
        Network((4, 2)).init(bad)


def test_init_takes_a_raw_key_and_runs_under_vmap(key):
    net = Network((4, 3, 2))
    raw = net.init(jax.random.PRNGKey(0))
    assert raw[0].W.shape == (3, 4)
    batched = jax.vmap(net.init)(jax.random.split(key, 3))
    assert batched[0].W.shape == (3, 3, 4)


def test_equivalent_linear_map_refuses_non_finite_params(key):
    net = Network((4, 3, 2), hidden="identity", output="identity")
    params = net.init(key)
    params = (params[0]._replace(W=params[0].W.at[0, 0].set(jnp.inf)), params[1])
    with pytest.raises(ValueError, match=r"params\[0\].W has 1 non-finite entries"):
        equivalent_linear_map(params, net)


def test_complex_x_is_refused(key):
    net = Network((4, 2))
    with pytest.raises(TypeError, match="x must hold real numbers; got dtype complex"):
        net.apply(net.init(key), jnp.ones((2, 4), jnp.complex64))
