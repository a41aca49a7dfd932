"""Hand-written back-propagation (delta rule and materialized chain) against independent oracles.

Oracles: jax.grad of the objective (autodiff), jax.jacrev of each local function, and closed
forms (logistic regression, the MSE output gradient). ReLU kinks: inputs are continuous random
draws, so a pre-activation is exactly 0 with probability zero; and at 0 every method here uses
relu'(0) = 0, so they would agree there too.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tolerances import HAND_VS_AUTODIFF

from functional_nn import (
    Layer,
    Network,
    autodiff,
    backprop,
    bce,
    compare_gradients,
    factor_table,
    jacobian_chain,
    jacobian_factors,
    mse,
    objective,
    sigmoid,
)
from functional_nn.lecture import _gradients as backprop_module

HAND = {"backprop": backprop, "jacobian_chain": jacobian_chain}


def _problem(net, loss, key, n, dtype="float64"):
    """Params, x and y for ``net``; ``n=None`` for a single sample (D,)."""
    kp, kx, ky, kb = jax.random.split(key, 4)
    params = net.init(kp, dtype)
    if net.bias:  # non-zero biases, so that a wrong bias gradient shows
        params = tuple(
            Layer(W, 0.3 * jax.random.normal(k, b.shape, dtype))
            for (W, b), k in zip(params, jax.random.split(kb, len(params)), strict=True)
        )
    shape = (net.D,) if n is None else (n, net.D)
    x = jax.random.normal(kx, shape, dtype)
    y_shape = shape[:-1] + (net.O,)
    if loss == "bce":
        y = (jax.random.uniform(ky, y_shape) > 0.5).astype(dtype)
    elif loss == "cross_entropy":
        y = jax.nn.one_hot(jax.random.randint(ky, y_shape[:-1], 0, net.O), net.O, dtype=dtype)
    else:
        y = jax.random.normal(ky, y_shape, dtype)
    return params, x, y


def _assert_close(grads, ref, tol):
    for c in compare_gradients(grads, ref):
        assert c.normwise <= tol, c


def _call(method, net, loss, params, x, y, reduction, jit):
    f = functools.partial(method, net, loss, reduction=reduction)
    return (jax.jit(f) if jit else f)(params, x, y)


@pytest.mark.heavy
@given(
    hidden_sizes=st.lists(st.integers(1, 8), min_size=0, max_size=4),
    D=st.integers(1, 8),
    O=st.integers(1, 8),
    hidden=st.sampled_from(["sigmoid", "relu", "tanh", "identity"]),
    output=st.sampled_from(["sigmoid", "identity", "softmax"]),
    bias=st.booleans(),
    loss=st.sampled_from(["bce", "mse"]),
    reduction=st.sampled_from(["sum", "mean"]),
    n=st.one_of(st.none(), st.integers(1, 16)),
    dtype=st.sampled_from(["float64", "float32"]),
    jit=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hand_written_methods_match_autodiff_on_random_networks(
    hidden_sizes, D, O, hidden, output, bias, loss, reduction, n, dtype, jit, seed
):
    if output == "softmax":
        loss = "cross_entropy" if loss == "bce" else "mse"  # one-hot targets, or any y
        O = max(O, 2)  # a softmax over one class is refused
    elif loss == "bce" and output == "identity":
        loss = "mse"  # BCE needs y_hat in (0, 1)
    net = Network((D, *hidden_sizes, O), hidden=hidden, output=output, bias=bias)
    params, x, y = _problem(net, loss, jax.random.key(seed), n, dtype)
    J_ref, ref = _call(autodiff, net, loss, params, x, y, reduction, jit)
    for method in HAND.values():
        J, grads = _call(method, net, loss, params, x, y, reduction, jit)
        assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
        assert all(g.dtype == jnp.dtype(dtype) for g in jax.tree_util.tree_leaves(grads))
        assert abs(float(J) - float(J_ref)) <= HAND_VS_AUTODIFF[dtype] * max(1.0, abs(float(J_ref)))
        _assert_close(grads, ref, HAND_VS_AUTODIFF[dtype])


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("jit", [False, True])
def test_lecture_network_matches_autodiff(name, jit, key):
    net = Network((4, 3, 2), bias=False)
    params, x, y = _problem(net, "bce", key, 10)
    _, ref = _call(autodiff, net, "bce", params, x, y, "sum", jit)
    _, grads = _call(HAND[name], net, "bce", params, x, y, "sum", jit)
    _assert_close(grads, ref, HAND_VS_AUTODIFF["float64"])


def test_objective_is_the_sum_of_per_sample_losses(key):
    net = Network((3, 4, 2), hidden="tanh")
    params, x, y = _problem(net, "bce", key, 5)
    per_sample = [objective(net, "bce")(params, x[n], y[n]) for n in range(5)]
    np.testing.assert_allclose(objective(net, "bce")(params, x, y), sum(per_sample), rtol=1e-14)
    np.testing.assert_allclose(
        objective(net, "bce", "mean")(params, x, y), sum(per_sample) / 5, rtol=1e-14
    )
    y_hat = net.apply(params, x)
    np.testing.assert_allclose(
        objective(net, "bce")(params, x, y), jnp.sum(bce.value(y_hat, y)), rtol=1e-13
    )


# -- every factor against jax.jacrev of its local function --------------------------------------


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("hidden", ["sigmoid", "relu", "tanh"])
def test_every_factor_matches_jacrev_of_its_local_function(hidden, bias, key):
    net = Network((4, 5, 3, 2), hidden=hidden, output="sigmoid", bias=bias)
    params, x, y = _problem(net, "mse", key, None)
    factors = jacobian_factors(net, "mse", params, x, y)
    tr = net.trace(params, x)
    y_hat = tr.h[-1]
    np.testing.assert_allclose(
        factors.seed, jax.jacrev(lambda a: mse.value(a, y))(y_hat)[None, :], rtol=1e-14
    )
    for l in range(1, net.L + 2):
        W, b = params[l - 1]
        act = net.activation(l)
        h_prev = tr.h[l - 1]

        def layer(W_, h_, b_, act=act):
            z = W_ @ h_ + (b_ if b_ is not None else 0)
            return act.fn(z)

        f = factors.layers[l - 1]
        dh_dW = jax.jacrev(layer, argnums=0)(W, h_prev, b)  # (H_l, H_l, H_{l-1})
        np.testing.assert_allclose(f.dh_dw, dh_dW.reshape(W.shape[0], -1), rtol=1e-13, atol=0)
        if l > 1:
            dh_dh = jax.jacrev(layer, argnums=1)(W, h_prev, b)
            np.testing.assert_allclose(f.dh_dh_prev, dh_dh, rtol=1e-13, atol=0)
        else:
            assert f.dh_dh_prev is None  # the first layer needs no input gradient
        if bias:
            np.testing.assert_allclose(
                f.dh_db, jax.jacrev(layer, argnums=2)(W, h_prev, b), rtol=1e-13, atol=0
            )


def test_fused_seed_is_dJ_dz_and_output_factors_are_those_of_z(key):
    net = Network((4, 3, 2), bias=False)
    params, x, y = _problem(net, "bce", key, None)
    fused = jacobian_factors(net, "bce", params, x, y)
    plain = jacobian_factors(net, "bce", params, x, y, fused=False)
    assert bool(fused.fused) and not bool(plain.fused)
    z = net.trace(params, x).z[-1]
    dJ_dz = jax.jacrev(lambda z_: bce.logits_value(z_, y))(z)[None, :]
    np.testing.assert_allclose(fused.seed, dJ_dz, rtol=1e-14)
    # the slide's product dJ/dy_hat . dy_hat/dz equals the fused seed
    np.testing.assert_allclose(plain.seed * sigmoid.derivative(z)[None, :], fused.seed, rtol=1e-12)
    np.testing.assert_allclose(fused.layers[1].dh_dh_prev, params[1].W, rtol=0)
    _, g_fused = jacobian_chain(net, "bce", params, x, y)
    _, g_plain = jacobian_chain(net, "bce", params, x, y, fused=False)
    _assert_close(g_plain, g_fused, 1e-12)
    with pytest.raises(ValueError, match="no fused form for a 'identity' output"):
        reg = Network((4, 2), output="identity", bias=False)
        jacobian_factors(reg, "mse", reg.init(key), x, y, fused=True)


def test_lecture_network_factor_shapes_and_table(key):
    net = Network((4, 3, 2), bias=False)
    params, x, y = _problem(net, "mse", key, 7)
    f = jacobian_factors(net, "mse", params, x, y)
    assert f.seed.shape == (7, 1, 2)  # dJ/dy_hat, per sample
    assert f.layers[1].dh_dh_prev.shape == (7, 2, 3)  # dy_hat/dh
    assert f.layers[1].dh_dw.shape == (7, 2, 6)  # dy_hat/dw(2)
    assert f.layers[0].dh_dw.shape == (7, 3, 12)  # dh/dw(1)
    assert f.layers[0].dh_dh_prev is None
    table = factor_table(net, f)
    for row in (
        "dJ/dy_hat      (1, 2)",
        "dy_hat/dh      (2, 3)",
        "dy_hat/dw(2)   (2, 6)",
        "dh/dw(1)       (3, 12)",
        "P = 18",
    ):
        assert row in table


# -- closed forms -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HAND))
def test_logistic_regression_gradient_is_sum_of_residual_times_x(name, key):
    net = Network((5, 1), bias=False)
    params, x, y = _problem(net, "bce", key, 20)
    y_hat = net.apply(params, x)
    expected = ((y_hat - y) * x).sum(axis=0)[None, :]  # sum_n (y_hat_n - y_n) x_n
    _, grads = HAND[name](net, "bce", params, x, y)
    np.testing.assert_allclose(grads[0].W, expected, rtol=1e-13)


def test_mse_output_gradient_is_twice_the_residual(key):
    net = Network((3, 4, 2), output="identity")
    params, x, y = _problem(net, "mse", key, 6)
    y_hat = net.apply(params, x)
    f = jacobian_factors(net, "mse", params, x, y)
    np.testing.assert_allclose(f.seed[:, 0, :], 2 * (y_hat - y), rtol=1e-15)
    _, grads = backprop(net, "mse", params, x, y)
    h1 = net.trace(params, x).h[1]
    np.testing.assert_allclose(grads[1].W, (2 * (y_hat - y)).T @ h1, rtol=1e-13)
    np.testing.assert_allclose(grads[1].b, (2 * (y_hat - y)).sum(axis=0), rtol=1e-13)


# -- extreme logits -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["autodiff", "backprop", "jacobian_chain"])
def test_extreme_logits_give_exact_finite_loss_and_gradient(name, dtype):
    method = {"autodiff": autodiff, **HAND}[name]
    net = Network((1, 1), bias=False)  # logistic regression, z = w x
    params = (Layer(jnp.array([[1.0]], dtype), None),)
    x = jnp.array([[1e4], [-1e4]], dtype)
    y = jnp.array([[0.0], [1.0]], dtype)  # both wrong with certainty
    J, grads = method(net, "bce", params, x, y)
    assert float(J) == 2e4
    # dJ/dw = sum_n (sigma(z_n) - y_n) x_n = (1 - 0) 1e4 + (0 - 1)(-1e4) = 2e4
    assert float(grads[0].W[0, 0]) == 2e4
    J, grads = method(net, "bce", params, x, 1 - y)  # both right with certainty
    assert float(J) == 0.0 and float(grads[0].W[0, 0]) == 0.0


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["autodiff", "backprop", "jacobian_chain"])
def test_bad_input_is_refused_by_every_method(name, key):
    method = {"autodiff": autodiff, **HAND}[name]
    net = Network((4, 3, 1))
    params, x, y = _problem(net, "bce", key, 8)
    with pytest.raises(ValueError, match=r"y has shape \(8,\) .*reshape y to a column"):
        method(net, "bce", params, x, y[:, 0])
    with pytest.raises(ValueError, match=r"y has shape \(8, 2\)"):
        method(net, "bce", params, x, jnp.zeros((8, 2)))
    with pytest.raises(ValueError, match="D=4 inputs"):
        method(net, "bce", params, x[:, :3], y)
    with pytest.raises(ValueError, match=r"needs targets in \[0.0, 1.0\].*1 entries"):
        method(net, "bce", params, x, y.at[0, 0].set(2.0))
    with pytest.raises(ValueError, match="y has 1 non-finite entries"):
        method(net, "mse", params, x, y.at[3, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="unknown loss 'nll'"):
        method(net, "nll", params, x, y)
    with pytest.raises(ValueError, match="reduction must be one of"):
        method(net, "bce", params, x, y, reduction="max")
    with pytest.raises(ValueError, match="params has 1 layers"):
        method(net, "bce", params[:1], x, y)


@pytest.mark.parametrize("samples_per_chunk", [1, 3, 10])
def test_jacobian_chain_accumulates_chunks_of_samples(samples_per_chunk, key, monkeypatch):

    module = backprop_module
    net = Network((4, 3, 2), hidden="tanh")
    monkeypatch.setattr(module, "_FACTOR_BUDGET", samples_per_chunk * module._factor_size(net))
    params, x, y = _problem(net, "bce", key, 10)  # 10 samples: whole chunks and a remainder
    _, ref = autodiff(net, "bce", params, x, y)
    _, grads = jacobian_chain(net, "bce", params, x, y)
    _assert_close(grads, ref, HAND_VS_AUTODIFF["float64"])


# -- what every method refuses, and what it gives back (issue 12) ----------------------------

ALL = {"autodiff": autodiff, **HAND}


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize(
    "loss, output",
    [("bce", "identity"), ("bce", "softmax"), ("cross_entropy", "sigmoid"),
     ("cross_entropy", "identity")],
)  # fmt: skip
def test_a_loss_on_an_output_it_is_not_defined_for_is_refused(name, loss, output, key):
    net = Network((3, 2), output=output)
    params = net.init(key)
    y = jnp.array([[1.0, 0.0]])
    with pytest.raises(ValueError, match=f"loss '{loss}' needs a network with output="):
        ALL[name](net, loss, params, jnp.ones((1, 3)), y)
    with pytest.raises(ValueError, match=f"got output='{output}'"):  # at trace time, under jit
        jax.jit(functools.partial(ALL[name], net, loss))(params, jnp.ones((1, 3)), y)


@pytest.mark.parametrize("output", ["sigmoid", "identity", "softmax"])
def test_mse_takes_any_output(output, key):
    net = Network((3, 2), output=output)
    J, _ = backprop(net, "mse", net.init(key), jnp.ones((1, 3)), jnp.zeros((1, 2)))
    assert np.isfinite(float(J))


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_non_finite_params_are_refused(name, bad, key):
    net = Network((4, 3, 1))
    params, x, y = _problem(net, "bce", key, 8)
    params = (params[0]._replace(b=params[0].b.at[1].set(bad)), params[1])
    with pytest.raises(ValueError, match=r"params\[0\].b has 1 non-finite entries"):
        ALL[name](net, "bce", params, x, y)


@pytest.mark.parametrize("name", sorted(ALL))
def test_integer_params_and_list_params_are_refused_the_same_way(name, key):
    net = Network((4, 3, 1), bias=False)
    params, x, y = _problem(net, "bce", key, 8)
    ints = tuple(Layer(p.W.astype(jnp.int32), None) for p in params)
    with pytest.raises(ValueError, match=r"params\[0\].W has dtype int32; .* floating-point"):
        ALL[name](net, "bce", ints, x, y)
    with pytest.raises(ValueError, match=r"params must be a tuple .* got list \(use tuple"):
        ALL[name](net, "bce", list(params), x, y)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])  # float32: the property test
def test_gradients_come_back_in_the_dtype_of_params(name, dtype, key):
    net = Network((4, 3, 1))
    params, x, y = _problem(net, "bce", key, 8, "float32")
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    J, grads = ALL[name](net, "bce", params, x, y)  # x stays float32
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    assert [g.dtype for g in jax.tree_util.tree_leaves(grads)] == [jnp.dtype(dtype)] * 4


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_an_empty_batch_is_refused(name, reduction, key):
    net = Network((4, 3, 1))
    params = net.init(key)
    with pytest.raises(ValueError, match=r"x is an empty batch, shape \(0, 4\)"):
        ALL[name](net, "bce", params, jnp.zeros((0, 4)), jnp.zeros((0, 1)), reduction)


def test_x_and_y_that_are_not_arrays_get_a_clear_type_error(key):
    net = Network((2, 1))
    params = net.init(key)
    with pytest.raises(TypeError, match=r"x must be an array .* got list .*jnp.asarray"):
        backprop(net, "mse", params, [[1.0, 2.0]], jnp.zeros((1, 1)))
    with pytest.raises(TypeError, match="x must hold real numbers; got dtype <U1"):
        backprop(net, "mse", params, np.array([["a", "b"]]), jnp.zeros((1, 1)))
    with pytest.raises(TypeError, match=r"y must be an array .* got list"):
        backprop(net, "mse", params, jnp.ones((1, 2)), [[0.0]])


@pytest.mark.parametrize("where", ["accelerator", "cpu"])
def test_value_checks_never_copy_a_whole_device_array_to_the_host(where, key, host_reads,
                                                                  monkeypatch):  # fmt: skip
    """x, y and params are checked where they live: off the CPU only a few counts come back;
    on the CPU NumPy reads the arrays in place (a view: no transfer, nothing compiled)."""
    import functional_nn._util._validation as validation

    if where == "accelerator":  # what a GPU array takes; a CPU does not enforce transfer_guard
        monkeypatch.setattr(validation, "_in_host_memory", lambda a: False)
    net = Network((16, 8, 3), output="softmax")
    params, x, y = _problem(net, "cross_entropy", key, 64)
    for method in ALL.values() if where == "cpu" else [backprop]:  # one prepare() for all
        host_reads.clear()
        method(net, "cross_entropy", params, x, y)
        if where == "accelerator":
            assert max(host_reads) <= 8, host_reads  # counts, never x (1024)
        else:
            assert x.size in host_reads and np.asarray(x).base is not None  # read in place
    host_reads.clear()
    np.asarray(x)  # the counter sees a read
    assert host_reads == [x.size]


def test_a_concrete_x_closed_over_in_a_trace_is_checked_on_its_device(key, monkeypatch):
    import functional_nn._util._validation as validation

    monkeypatch.setattr(validation, "_in_host_memory", lambda a: False)  # as on a GPU
    net = Network((4, 3, 1))
    params, x, y = _problem(net, "bce", key, 8)
    J, _ = jax.jit(lambda p: backprop(net, "bce", p, x, y))(params)  # x, y: constants
    assert float(J) == pytest.approx(float(backprop(net, "bce", params, x, y)[0]), rel=1e-12)
    x_nan = x.at[0, 0].set(jnp.nan)
    with pytest.raises(ValueError, match="x has 1 non-finite entries"):
        jax.jit(lambda p: backprop(net, "bce", p, x_nan, y))(params)


@pytest.mark.parametrize("fused", ["yes", 1])
def test_fused_must_be_a_bool(fused, key):
    net = Network((3, 2))
    with pytest.raises(TypeError, match="fused must be None, True or False"):
        jacobian_factors(net, "bce", net.init(key), jnp.ones((1, 3)), jnp.ones((1, 2)), fused=fused)
