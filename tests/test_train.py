"""Training: the lecture's update, fit against independent solvers, trajectories, accuracy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.linear_model import LogisticRegression

import functional_nn as fnn
from functional_nn import Layer, Network, fit, gradient_descent, load_dataset

FEATURES = [1, 4, 8, 9]  # texture, smoothness, symmetry, fractal dimension: not separable


@pytest.fixture(scope="module")
def cancer():
    return load_dataset("breast_cancer")


def _logistic(ds, features=FEATURES):
    x, y = ds.x_train[:, features], ds.y_train
    net = Network((len(features), 1))
    params = (Layer(jnp.zeros((1, len(features))), jnp.zeros(1)),)
    return net, params, x, y


def test_gradient_descent_is_optax_sgd(key):
    grads = {"W": jax.random.normal(key, (3, 4)), "b": jnp.arange(3.0)}
    ours, theirs = gradient_descent(0.05), optax.sgd(0.05)
    u1, _ = ours.update(grads, ours.init(grads))
    u2, _ = theirs.update(grads, theirs.init(grads))
    for a, b in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        gradient_descent(0.0)


def test_fit_with_gradient_descent_and_sgd_take_the_same_steps(cancer):
    net, params, x, y = _logistic(cancer)
    a, ha = fit(net, "bce", params, x, y, optimizer=gradient_descent(1e-3), steps=50)
    b, hb = fit(net, "bce", params, x, y, optimizer=optax.sgd(1e-3), steps=50)
    np.testing.assert_array_equal(ha.loss, hb.loss)
    np.testing.assert_array_equal(a[0].W, b[0].W)


def test_logistic_regression_reaches_the_unpenalized_optimum_of_scikit_learn(cancer):
    net, params, x, y = _logistic(cancer)
    trained, history = fit(net, "bce", params, x, y, optimizer=optax.adam(0.05), steps=3000,
                           chunk_size=1000)  # fmt: skip
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=100_000).fit(np.asarray(x), np.ravel(y))
    ours = np.concatenate([np.ravel(trained[0].W), trained[0].b])
    theirs = np.concatenate([ref.coef_.ravel(), ref.intercept_])
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_weight_decay_is_the_l2_penalty_scikit_learn_calls_1_over_c(cancer):
    net, params, x, y = _logistic(cancer)
    lam = 5.0  # sklearn minimizes ||w||^2 / 2 + C sum_n loss_n: lambda = 1 / C
    trained, _ = fit(net, "bce", params, x, y, optimizer=optax.adam(0.05), steps=3000,
                     weight_decay=lam, chunk_size=1000)  # fmt: skip
    ref = LogisticRegression(C=1 / lam, tol=1e-12, max_iter=100_000).fit(np.asarray(x), np.ravel(y))
    ours = np.concatenate([np.ravel(trained[0].W), trained[0].b])
    theirs = np.concatenate([ref.coef_.ravel(), ref.intercept_])
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_full_batch_gradient_descent_decreases_the_convex_loss_at_every_step(cancer):
    net, params, x, y = _logistic(cancer)
    _, history = fit(net, "bce", params, x, y, optimizer=gradient_descent(1e-3), steps=300)
    assert np.all(np.diff(history.loss) < 0)


@pytest.mark.parametrize("batch_size", [None, 32])
def test_backprop_and_autodiff_give_the_same_trajectory(batch_size, key):
    ds = load_dataset("moons")
    net = Network((2, 8, 8, 1), hidden="tanh")
    params = net.init(key)
    run = functools.partial(fit, net, "bce", params, ds.x_train, ds.y_train, optax.adam(1e-2),
                            200, batch_size, jax.random.key(1))  # fmt: skip
    a, ha = run(gradient=fnn.backprop)
    b, hb = run(gradient=fnn.autodiff)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-10)
    for la, lb in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(la, lb, rtol=1e-10, atol=1e-12)


def test_any_gradient_method_trains_even_finite_differences(key):
    ds = load_dataset("xor")
    net = Network((2, 3, 1), hidden="tanh")
    params = net.init(key)
    results = {}
    for name, method in [("backprop", fnn.backprop), ("jacobian_chain", fnn.jacobian_chain),
                         ("complex_step", fnn.complex_step)]:  # fmt: skip
        trained, h = fit(net, "bce", params, ds.x_train, ds.y_train, optax.adam(1e-2), 100,
                         gradient=method)  # fmt: skip
        results[name] = h.loss
    np.testing.assert_allclose(results["jacobian_chain"], results["backprop"], rtol=1e-10)
    np.testing.assert_allclose(results["complex_step"], results["backprop"], rtol=1e-10)


def test_minibatches_reshuffle_every_epoch_and_depend_on_the_key(key):
    ds = load_dataset("moons")
    net = Network((2, 4, 1))
    params = net.init(key)
    run = functools.partial(fit, net, "bce", params, ds.x_train, ds.y_train, optax.sgd(1e-2), 30,
                            64)  # fmt: skip
    _, h1 = run(key=jax.random.key(1))
    _, h1b = run(key=jax.random.key(1))
    _, h2 = run(key=jax.random.key(2))
    np.testing.assert_array_equal(h1.loss, h1b.loss)
    assert not np.allclose(h1.loss, h2.loss)
    # 320 samples / 64 = 5 batches an epoch: epochs 1 and 2 differ in their batches
    assert not np.allclose(h1.loss[:5], h1.loss[5:10])


def test_early_stopping_returns_the_best_validation_parameters(key):
    ds = load_dataset("xor")
    x, y = ds.x_train[:24], ds.y_train[:24]
    y = y.at[:6].set(1 - y[:6])  # a tiny training set with flipped labels: the wide net overfits
    net = Network((2, 64, 64, 1), hidden="relu")
    params = net.init(key)
    best, h = fit(net, "bce", params, x, y, optax.adam(3e-2), steps=3000, x_val=ds.x_test,
                  y_val=ds.y_test, patience=300, chunk_size=100)  # fmt: skip
    val = fnn.objective(net, "bce")
    assert h.best_step == int(np.argmin(h.val_loss)) < h.steps - 300
    assert h.steps < 3000  # it stopped early
    np.testing.assert_allclose(float(val(best, ds.x_test, ds.y_test)), h.val_loss.min(), rtol=1e-12)
    last, _ = fit(net, "bce", params, x, y, optax.adam(3e-2), steps=h.steps)
    assert float(val(last, ds.x_test, ds.y_test)) > h.val_loss.min()


def test_history_and_callback(key):
    ds = load_dataset("circles")
    net = Network((2, 8, 1), hidden="relu")
    seen = []
    _, h = fit(net, "bce", net.init(key), ds.x_train, ds.y_train, optax.adam(1e-2), steps=250,
               chunk_size=100, callback=lambda step, loss: seen.append((step, loss)))  # fmt: skip
    assert h.loss.shape == (250,) and h.val_loss is None and h.steps == 250
    assert [s for s, _ in seen] == [100, 200, 250] and seen[-1][1] == pytest.approx(h.loss[-1])


def test_accuracy_moons_and_digits(key):
    ds = load_dataset("moons")
    net = Network((2, 16, 16, 1), hidden="relu")
    p, _ = fit(net, "bce", net.init(key), ds.x_train, ds.y_train, optax.adam(1e-2), 1500, 32,
               jax.random.key(1))  # fmt: skip
    assert float(((net.apply(p, ds.x_test) > 0.5) == (ds.y_test > 0.5)).mean()) >= 0.97
    ds = load_dataset("digits")
    net = Network((64, 32, 10), hidden="relu", output="softmax")
    p, _ = fit(net, "cross_entropy", net.init(key), ds.x_train, ds.y_train, optax.adam(1e-3),
               1000, 64, jax.random.key(1))  # fmt: skip
    assert float((net.apply(p, ds.x_test).argmax(1) == ds.y_test.argmax(1)).mean()) >= 0.95


def test_logistic_regression_matches_scikit_learn_test_accuracy(cancer):
    net = Network((30, 1))
    params = (Layer(jnp.zeros((1, 30)), jnp.zeros(1)),)
    p, _ = fit(net, "bce", params, cancer.x_train, cancer.y_train, optax.adam(1e-2), 2000,
               weight_decay=1.0)  # fmt: skip
    ours = float(((net.apply(p, cancer.x_test) > 0.5) == (cancer.y_test > 0.5)).mean())
    ref = LogisticRegression(max_iter=10_000).fit(np.asarray(cancer.x_train),
                                                  np.ravel(cancer.y_train))  # fmt: skip
    theirs = ref.score(np.asarray(cancer.x_test), np.ravel(cancer.y_test))
    assert ours >= theirs - 0.01


def test_bad_fit_arguments(key):
    net = Network((2, 1))
    params = net.init(key)
    x, y = jnp.zeros((10, 2)), jnp.zeros((10, 1))
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        fit(net, "bce", params, x, y, steps=0)
    with pytest.raises(ValueError, match="batch_size must be an int in 1..N=10"):
        fit(net, "bce", params, x, y, steps=1, batch_size=11, key=key)
    with pytest.raises(ValueError, match="minibatches need a key"):
        fit(net, "bce", params, x, y, steps=1, batch_size=5)
    with pytest.raises(ValueError, match="early stopping .* needs x_val and y_val"):
        fit(net, "bce", params, x, y, steps=1, patience=3)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        fit(net, "bce", params, x, y, steps=1, weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"y has shape \(10,\)"):
        fit(net, "bce", params, x, y[:, 0], steps=1)
