"""check_vjp on vector functions of pytrees, and the zoo: functions others wrote, checked in
float32 with no false failure while a 5% error through a custom_vjp is caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_nn as fnn

DTYPES = ["float64", "float32"]


def _failed(report, method=None):
    return {r.leaf for r in report.failures if method is None or r.method == method}


def layer(p):
    """A dict in, a dict out: a tanh layer and a side output."""
    return {"h": jnp.tanh(p["W"] @ p["x"] + p["b"]), "s": jnp.sum(p["x"] ** 2)}


def layer_params(seed, dtype):
    k = jax.random.split(jax.random.key(seed), 3)
    return {
        "W": jax.random.normal(k[0], (3, 3), dtype),
        "b": jax.random.normal(k[1], (3,), dtype),
        "x": jax.random.normal(k[2], (3,), dtype),
    }


def _dense(transposed: bool):
    """A custom dense layer ``W @ x`` with its own VJP; ``transposed`` plants the bug
    ``dx = W @ ct`` (instead of ``W^T @ ct``)."""

    @jax.custom_vjp
    def dense(p):
        return p["W"] @ p["x"]

    def fwd(p):
        return dense(p), p

    def bwd(p, ct):
        dx = p["W"] @ ct if transposed else p["W"].T @ ct
        return ({"W": jnp.outer(ct, p["x"]), "x": dx},)

    dense.defvjp(fwd, bwd)
    return dense


DENSE, DENSE_TRANSPOSED = _dense(False), _dense(True)


@jax.custom_vjp
def sin_unit_only(x):
    return jnp.sin(x)


sin_unit_only.defvjp(lambda x: (jnp.sin(x), x), lambda x, ct: (jnp.cos(x),))  # ignores ct


@jax.custom_vjp
def sin_offset(x):
    return jnp.sin(x)


sin_offset.defvjp(lambda x: (jnp.sin(x), x), lambda x, ct: (jnp.cos(x) * ct + 1e-3,))


def _dense_params(dtype):
    k1, k2 = jax.random.split(jax.random.key(3))
    return {"W": jax.random.normal(k1, (3, 3), dtype), "x": jax.random.normal(k2, (3,), dtype)}


@pytest.mark.parametrize("dtype", DTYPES)
def test_right_vjps_pass(dtype):
    for seed in (0, 1):
        report = fnn.check_vjp(layer, layer_params(seed, dtype))
        assert report.ok, str(report)
        assert {r.method for r in report.rows} == {"vjp", "dot-product", "zero cotangent", "vmap"}
    report = fnn.check_vjp(DENSE, _dense_params(dtype))
    assert report.ok and report.reference == "autodiff of the primal", str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_transposed_cotangent_in_a_custom_dense_layer_fails_on_x_only(dtype):
    report = fnn.check_vjp(DENSE_TRANSPOSED, _dense_params(dtype))
    assert _failed(report, "vjp") == {"['x']"} == _failed(report, "dot-product"), str(report)
    assert _failed(report) == {"['x']"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_rule_right_only_for_a_unit_cotangent_fails(dtype):
    x = jnp.array([0.3, -1.2, 2.0], dtype)
    # with a cotangent of ones the rule is right: check_grad of sum(...) cannot see it
    assert fnn.check_grad(lambda q: jnp.sum(sin_unit_only(q)), x).ok
    report = fnn.check_vjp(sin_unit_only, x)
    assert {"vjp", "dot-product"} <= {r.method for r in report.failures}, str(report)


def test_a_zero_cotangent_must_give_zero():
    report = fnn.check_vjp(sin_offset, jnp.array([0.3, -1.2, 2.0]))
    assert "zero cotangent" in {r.method for r in report.failures}, str(report)


def test_a_vjp_given_by_hand_is_checked_and_vmap_equals_the_loop():
    def vjp(p, w):  # d(W x)/dW^T w = outer(w, x), d/dx = W^T w
        return {"W": jnp.outer(w, p["x"]), "x": p["W"].T @ w}

    params = _dense_params("float64")
    report = fnn.check_vjp(lambda p: p["W"] @ p["x"], params, vjp=vjp)
    assert report.ok, str(report)
    assert all(r.status == "pass" for r in report.rows if r.method == "vmap")

    def wrong(p, w):
        return {"W": jnp.outer(p["x"], w), "x": p["W"].T @ w}  # dW transposed

    assert _failed(fnn.check_vjp(lambda p: p["W"] @ p["x"], params, vjp=wrong)) == {"['W']"}


# -- the zoo: functions others wrote, random inputs, several seeds ------------------------------

LABELS = jnp.array([1.0, 0, 0, 1, 1, 0, 1, 0, 1])
ZOO = {
    "sigmoid": lambda x: jnp.sum(jax.nn.sigmoid(x)),
    "softplus": lambda x: jnp.sum(jax.nn.softplus(x)),
    "logsumexp": lambda x: jax.nn.logsumexp(x),
    "tanh mlp": lambda x: jnp.sum(jnp.tanh(jnp.tanh(x[:6].reshape(2, 3)) @ x[6:9])),
    "bce on logits": lambda x: jnp.sum(jax.nn.softplus(x) - LABELS.astype(x.dtype) * x),
}


def _planted(f, off):
    """f through a custom_vjp whose gradient has its largest entry ``off`` too large, wherever
    it is evaluated (one function, one set of compiled programs, for every seed)."""

    @jax.custom_vjp
    def h(q):
        return f(q)

    def bwd(q, ct):
        g = jax.grad(f)(q)
        return (ct * g.at[jnp.argmax(jnp.abs(g))].multiply(1 + off),)

    h.defvjp(lambda q: (f(q), q), bwd)
    return h


@pytest.mark.parametrize("dtype, off", [("float32", 0.05), ("float64", 0.01)])
def test_zoo_no_false_failure_and_planted_errors_caught(dtype, off):
    """Property, on a small zoo: every right gradient passes, every planted error fails, both
    at top level (reference: the primal) and nested inside f (the complex step or central)."""
    false, missed = [], []
    for name, f in ZOO.items():
        h = _planted(f, off)
        planted = (h, lambda q, h=h: 1.0 * h(q))  # at top level, and nested
        for seed in range(3):
            x = jax.random.normal(jax.random.key(seed), (9,), dtype)
            if not fnn.check_grad(f, x).ok:
                false.append((name, seed))
            for g in planted:
                if fnn.check_grad(g, x, taylor=False).ok:
                    missed.append((name, seed))
    assert not false, f"false failures: {false}"
    assert not missed, f"missed planted errors: {missed}"


def test_logsumexp_and_softplus_fall_back_from_the_complex_step_silently():
    x = jnp.linspace(-2.0, 2.0, 9)
    refs = {name: fnn.check_grad(ZOO[name], x, taylor=False).reference for name in ZOO}
    assert refs["sigmoid"] == "complex_step" and refs["tanh mlp"] == "complex_step"
    assert refs["softplus"] == "central"  # jnp.logaddexp reads a derivative of 0


def test_check_vjp_bad_arguments():
    with pytest.raises(ValueError, match="g must return real or complex arrays; got bool"):
        fnn.check_vjp(lambda q: q > 0, jnp.ones(3))
    with pytest.raises(TypeError, match="another tree structure"):
        fnn.check_vjp(jnp.sin, jnp.ones(3), vjp=lambda p, w: (w,))
    with pytest.raises(TypeError, match="k must be an int"):
        fnn.check_vjp(jnp.sin, jnp.ones(3), k=True)
    np.testing.assert_equal(fnn.check_vjp(jnp.sin, jnp.ones(3), k=1).ok, True)


def test_check_vjp_non_finite_primals_and_integer_vjps_are_errors_naming_the_leaf():
    with pytest.raises(ValueError, match=r"^check_vjp: primals\['a'\] has 1 non-finite entries"):
        fnn.check_vjp(jnp.sin, {"a": jnp.array([1.0, jnp.inf])})
    with pytest.raises(TypeError, match=r"^check_vjp: the VJP's leaf \(root\) has dtype int32"):
        fnn.check_vjp(jnp.sin, jnp.ones(3), vjp=lambda p, w: (w > 0).astype(jnp.int32))
