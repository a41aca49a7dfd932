"""Training: the lecture's update, fit against independent solvers, trajectories, accuracy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import functional_nn as fnn
from functional_nn import Layer, Network, fit, gradient_descent, load_dataset


def _sklearn_logreg(**kwargs):
    """scikit-learn's solver, imported when a test asks for it (0.85 s in each worker)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(**kwargs)


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
    with pytest.raises(ValueError, match=r"alpha must be a real number in \(0.0, inf\)"):
        gradient_descent(0.0)
    with pytest.raises(TypeError, match="alpha must be a real number .* got True"):
        gradient_descent(True)
    for alpha in (np.float32(0.05), jnp.float32(0.05), jnp.asarray(0.05)):  # scalars welcome
        updates, _ = gradient_descent(alpha).update(jnp.ones(2), optax.EmptyState())
        np.testing.assert_allclose(updates, -0.05, rtol=1e-6)


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
    ref = _sklearn_logreg(C=np.inf, tol=1e-12, max_iter=100_000).fit(np.asarray(x), np.ravel(y))
    ours = np.concatenate([np.ravel(trained[0].W), trained[0].b])
    theirs = np.concatenate([ref.coef_.ravel(), ref.intercept_])
    np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_weight_decay_is_the_l2_penalty_scikit_learn_calls_1_over_c(cancer):
    net, params, x, y = _logistic(cancer)
    lam = 5.0  # sklearn minimizes ||w||^2 / 2 + C sum_n loss_n: lambda = 1 / C
    trained, _ = fit(net, "bce", params, x, y, optimizer=optax.adam(0.05), steps=3000,
                     weight_decay=lam, chunk_size=1000)  # fmt: skip
    ref = _sklearn_logreg(C=1 / lam, tol=1e-12, max_iter=100_000).fit(np.asarray(x), np.ravel(y))
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
    assert h.best_step == int(np.argmin(h.val_loss)) == h.steps - 301  # checked at every step
    assert h.steps < 3000 and h.stop_reason == "early_stopping"
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
    assert h.stop_reason == "steps" and h.non_finite_step is None and h.best_step is None
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
    ref = _sklearn_logreg(max_iter=10_000).fit(np.asarray(cancer.x_train),
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
    with pytest.raises(ValueError, match=r"weight_decay must be a real number in \[0.0, inf\)"):
        fit(net, "bce", params, x, y, steps=1, weight_decay=-1.0)
    with pytest.raises(ValueError, match=r"y has shape \(10,\)"):
        fit(net, "bce", params, x, y[:, 0], steps=1)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(steps=True), TypeError, r"steps must be an int >= 1; got True \(a bool\)"),
        (dict(steps=2.0), TypeError, r"steps must be an int >= 1; got 2.0 \(float\)"),
        (dict(batch_size=True, key=jax.random.key(0)), TypeError, "batch_size must be an int"),
        (dict(chunk_size=False), TypeError, r"chunk_size must be an int >= 1; got False"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be an int >= 1; got 0"),
        (dict(x_val=np.zeros((4, 2)), y_val=np.zeros((4, 1)), patience=True), TypeError,
         r"patience must be an int >= 1; got True"),
        (dict(weight_decay="a"), TypeError, r"weight_decay must be a real number .* got 'a'"),
        (dict(optimizer="adam"), TypeError,
         r"optimizer must be an optax GradientTransformation .* got the string 'adam'"),
        (dict(optimizer=optax.adam), TypeError, r"adam is not called yet: call it .*adam\(1e-3\)"),
        (dict(gradient="backprop"), TypeError,
         r"gradient must be a gradient method, a function .* got 'backprop' \(str\)"),
        (dict(x=np.zeros((0, 2)), y=np.zeros((0, 1))), ValueError,
         r"x must be a batch \(N, D\) with N >= 1 samples; got shape \(0, 2\)"),
        (dict(x_val=np.zeros((0, 2)), y_val=np.zeros((0, 1))), ValueError,
         r"x_val must be a batch \(N, D\) with N >= 1 samples; got shape \(0, 2\)"),
    ],
)  # fmt: skip
def test_fit_refuses_each_bad_argument_by_name(kwargs, error, message, key):
    net = Network((2, 1))
    args = dict(x=np.zeros((10, 2)), y=np.zeros((10, 1)), steps=1)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        fit(net, "bce", net.init(key), **args)


# -- stopping: nothing lost, nothing silent --------------------------------------------------------


@pytest.fixture(scope="module")
def diverging():
    """Plain gradient descent with a step far too large: the loss overflows at some step."""
    ds = load_dataset("moons")
    net = Network((2, 8, 1), hidden="relu")
    return net, net.init(jax.random.key(0)), ds.x_train, ds.y_train, optax.sgd(1e4)


@pytest.mark.parametrize("chunk_size", [7, 13])  # 13: the failing step (26) opens a chunk
def test_a_non_finite_loss_stops_fit_with_the_last_finite_parameters(diverging, chunk_size):
    net, params, x, y, opt = diverging
    p, h = fit(net, "bce", params, x, y, opt, steps=200, chunk_size=chunk_size)
    assert h.stop_reason == "non_finite" and h.non_finite_step == h.steps == 26
    assert h.loss.shape == (26,) and np.all(np.isfinite(h.loss))
    # the parameters returned are those at which the last recorded (finite) loss was evaluated
    assert float(fnn.objective(net, "bce")(p, x, y)) == h.loss[-1]
    before, _ = fit(net, "bce", params, x, y, opt, steps=h.steps - 1, chunk_size=chunk_size)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_non_finite_loss_at_step_0_returns_the_starting_parameters(key):
    net = Network((2, 3, 1))
    params = net.init(key)

    def broken(net, loss, params, x, y, reduction):  # a gradient method whose J is NaN
        J, grads = fnn.backprop(net, loss, params, x, y, reduction)
        return J * jnp.nan, grads

    p, h = fit(net, "bce", params, jnp.ones((4, 2)), jnp.ones((4, 1)), steps=10, gradient=broken)
    assert (h.stop_reason, h.non_finite_step, h.steps, h.loss.shape) == ("non_finite", 0, 0, (0,))
    np.testing.assert_array_equal(p[0].W, params[0].W)


def test_a_non_finite_loss_with_patience_returns_the_best_validated_parameters(diverging):
    net, params, x, y, opt = diverging
    p, h = fit(net, "bce", params, x, y, opt, steps=200, x_val=x[:64], y_val=y[:64],
               patience=100, chunk_size=10)  # fmt: skip
    assert h.stop_reason == "non_finite" and h.best_step == int(np.argmin(h.val_loss))
    val = float(fnn.objective(net, "bce")(p, x[:64], y[:64]))
    assert val == h.val_loss[h.best_step]


def test_ctrl_c_in_the_callback_keeps_every_completed_step(key):
    ds = load_dataset("moons")
    net = Network((2, 8, 1), hidden="relu")
    params = net.init(key)
    run = functools.partial(fit, net, "bce", params, ds.x_train, ds.y_train, optax.adam(1e-2),
                            batch_size=32, key=jax.random.key(1), chunk_size=20)  # fmt: skip

    def ctrl_c(step, loss):
        raise KeyboardInterrupt

    p, h = run(steps=1000, callback=ctrl_c)
    assert h.stop_reason == "interrupted" and h.non_finite_step is None
    # the chunk already sent to the device finishes and counts: two chunks
    assert h.steps == 40 and h.loss.shape == (40,) and np.all(np.isfinite(h.loss))
    same, h2 = run(steps=h.steps)
    np.testing.assert_array_equal(h.loss, h2.loss)
    for a, b in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(same), strict=True):
        np.testing.assert_array_equal(a, b)


def test_any_other_exception_in_the_callback_propagates(key):
    net = Network((2, 1))

    def broken(step, loss):
        raise RuntimeError("the progress bar broke")

    with pytest.raises(RuntimeError, match="the progress bar broke"):
        fit(net, "bce", net.init(key), jnp.ones((4, 2)), jnp.ones((4, 1)), steps=30,
            chunk_size=10, callback=broken)  # fmt: skip


# -- compiled once: the program cache --------------------------------------------------------------


@pytest.fixture
def compilations():
    """Counts XLA compilations while the test runs (through JAX's public monitoring, which
    can add a listener but not remove one: it goes quiet after the test)."""
    events, active = [], [True]

    def listen(event, duration, **kwargs):
        if active[0] and event == "/jax/core/compile/backend_compile_duration":
            events.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    yield events
    active[0] = False


def test_an_equal_freshly_built_optimizer_compiles_nothing(cancer, compilations):
    net, params, x, y = _logistic(cancer)
    fit(net, "bce", params, x, y, optax.adam(1e-3), steps=130, chunk_size=50)
    compilations.clear()
    _, h = fit(net, "bce", params, x, y, optax.adam(1e-3), steps=130, chunk_size=50)
    assert compilations == [] and h.steps == 130
    _, h2 = fit(net, "bce", params, x, y, optax.adam(2e-3), steps=130, chunk_size=50)
    assert "jit(run)" in compilations  # a different learning rate is a different program
    assert not np.allclose(h.loss[1:], h2.loss[1:])


def test_steps_not_a_multiple_of_chunk_size_compile_one_program(cancer, compilations):
    net, params, x, y = _logistic(cancer)
    _, h = fit(net, "bce", params, x, y, optax.adam(1e-2), steps=250, chunk_size=100)
    assert compilations.count("jit(run)") == 1 and h.loss.shape == (250,)
    # the padded steps of the last chunk change nothing: 250 steps are 250 steps
    _, h2 = fit(net, "bce", params, x, y, optax.adam(1e-2), steps=250, chunk_size=250)
    np.testing.assert_allclose(h.loss, h2.loss, rtol=1e-13)


# -- the data go to the device once, the losses come back ------------------------------------------


def test_fit_copies_only_its_losses_to_the_host(host_reads, monkeypatch, key):
    import functional_nn.training._train as train

    ds = load_dataset("moons")
    net = Network((2, 8, 1), hidden="relu")
    params = net.init(key)
    x, y = np.asarray(ds.x_train), np.asarray(ds.y_train)  # NumPy: sent to the device once
    run = functools.partial(fit, net, "bce", params, x, y, optax.adam(1e-2), 250, 32,
                            jax.random.key(1), x_val=np.asarray(ds.x_test),
                            y_val=np.asarray(ds.y_test), patience=100, chunk_size=50)  # fmt: skip
    run()
    checked, prepare = [], train.prepare  # the argument checks end here

    def marked(*args, **kwargs):
        result = prepare(*args, **kwargs)
        checked.append(len(host_reads))
        return result

    monkeypatch.setattr(train, "prepare", marked)
    host_reads.clear()
    with jax.transfer_guard_host_to_device("disallow"):  # every implicit upload is an error
        p, h = run()
    assert h.steps == 250
    # the training loop reads, per chunk, the training and validation losses (chunk_size,)
    # and 3 numbers, then the best step: nothing of the size of x, y or the parameters
    chunks = -(-250 // 50)
    assert sorted(host_reads[checked[-1] :]) == sorted([50, 50, 3] * chunks + [1]), host_reads


def test_fit_names_a_bad_key_a_bad_mesh_and_a_list_x(cancer):
    net, params, x, y = _logistic(cancer)
    with pytest.raises(TypeError, match="fit: key must be a JAX PRNG key"):
        fit(net, "bce", params, x, y, steps=1, batch_size=8, key=0)
    with pytest.raises(TypeError, match="fit: mesh must be a jax.sharding.Mesh"):
        fit(net, "bce", params, x, y, steps=1, mesh=3)
    with pytest.raises(TypeError, match=r"fit: x must be an array .* got list"):
        fit(net, "bce", params, np.asarray(x).tolist(), y, steps=1)
