"""check_jvp: forward mode, leaf by leaf; right JVPs pass, planted tangent rules fail where
they are wrong (issue 20, item 3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_nn as fnn

DTYPES = ["float32", "float64"]


def _normal(seed, shapes, dtype):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    pairs = zip(keys, shapes.items(), strict=True)
    return {n: jax.random.normal(kk, s, dtype) for kk, (n, s) in pairs}


def mlp(p):  # dict of leaves in, a vector and a scalar out
    h = jnp.tanh(p["W1"] @ jnp.linspace(-1.0, 1.0, 3).astype(p["W1"].dtype) + p["b1"])
    return {"y": p["W2"] @ h, "norm": jnp.sum(h**2)}


def mlp_params(seed, dtype):
    return _normal(seed, {"W1": (4, 3), "b1": (4,), "W2": (2, 4)}, dtype)


ZOO = {
    "sin times a": (lambda p: jnp.sin(p["x"]) * p["a"],
                    lambda s, d: _normal(s, {"x": (5,), "a": ()}, d)),
    "softplus": (lambda p: jax.nn.softplus(p["x"]), lambda s, d: _normal(s, {"x": (6,)}, d)),
    "logsumexp": (lambda p: jax.nn.logsumexp(p["x"], axis=0),
                  lambda s, d: _normal(s, {"x": (4, 3)}, d)),
    "tanh mlp": (mlp, mlp_params),
}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ZOO))
def test_right_jvps_pass_with_every_row(name, dtype):
    g, make = ZOO[name]
    for seed in (0, 1):
        report = fnn.check_jvp(g, make(seed, dtype))
        assert report.ok, str(report)
        assert {r.method for r in report.rows} == {
            "jvp", "linearity", "zero tangent", "vmap", "transpose"
        }  # fmt: skip


def _rule(tangent):
    """sin with the tangent rule ``tangent(x, t)``."""

    @jax.custom_jvp
    def f(x):
        return jnp.sin(x)

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return jnp.sin(x), tangent(x, t)

    return f


X = jnp.array([0.3, -1.2, 2.0, 0.7])


def test_a_rule_right_only_for_a_unit_tangent_fails_linearity():
    f = _rule(lambda x, t: jnp.cos(x) * t * t)  # e_i has t * t = t
    report = fnn.check_jvp(lambda p: f(p["x"]), {"x": X})
    status = {r.method: r.status for r in report.rows}
    assert status["jvp"] == "pass" and status["linearity"] == "fail", str(report)


def test_a_rule_with_a_constant_added_fails_and_so_does_the_zero_tangent():
    f = _rule(lambda x, t: jnp.cos(x) * t + 0.1)
    report = fnn.check_jvp(lambda p: f(p["x"]), {"x": X})
    assert {r.method for r in report.failures} >= {"jvp", "zero tangent"}, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_rule_wrong_for_one_of_two_arguments_is_located(dtype):
    off = 1.05 if dtype == "float32" else 1.01

    @jax.custom_jvp
    def mul(x, y):
        return x * y

    @mul.defjvp
    def mul_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        return x * y, y * tx + off * x * ty

    p = _normal(3, {"x": (3,), "y": (3,)}, dtype)
    report = fnn.check_jvp(lambda q: jnp.sin(mul(q["x"], q["y"])), p)
    assert {(r.method, r.leaf) for r in report.failures} == {("jvp", "['y']")}, str(report)


def test_a_users_jvp_is_checked_and_gets_none_at_held_leaves():
    p = {"x": X, "step": jnp.array(3), "act": jnp.tanh}

    def g(q):
        return q["act"](q["x"])

    seen = []

    def jvp(q, t):
        seen.append(t["step"] is None and t["act"] is None)
        return (1 - jnp.tanh(q["x"]) ** 2) * t["x"]

    report = fnn.check_jvp(g, p, jvp=jvp)
    assert report.ok and all(seen) and seen, str(report)
    assert "held fixed (not inexact arrays): ['act'], ['step']" in report.description
    wrong = fnn.check_jvp(g, p, jvp=lambda q, t: jnp.cos(q["x"]) * t["x"])
    assert {r.method for r in wrong.failures} >= {"jvp", "transpose"}


def test_random_tangents_per_leaf_above_directional_and_bad_k():
    A = jnp.asarray(np.random.default_rng(0).standard_normal((120, 100)) / 10)
    report = fnn.check_jvp(lambda p: jnp.tanh(A @ p["w"]) + p["b"], {
        "w": jnp.asarray(np.random.default_rng(1).standard_normal((100, 101)) / 10),
        "b": jnp.zeros((120, 101)),
    })  # fmt: skip
    assert report.ok, str(report)
    assert {r.shape for r in report.rows if r.method == "jvp"} == {(3, 120 * 101)}
    with pytest.raises(ValueError, match="k must be at least 2"):
        fnn.check_jvp(lambda p: p, {"x": X}, k=1)


def test_forward_and_transposed_paths_that_disagree_fail_the_transpose_row():
    """A right forward rule (the user's jvp) beside a wrong reverse one (a custom_vjp inside
    g): the jvp rows pass, <w, jvp(v)> = <vjp(w), v> fails."""

    @jax.custom_vjp
    def s(x):
        return jnp.sin(x)

    s.defvjp(lambda x: (jnp.sin(x), x), lambda x, ct: (1.05 * jnp.cos(x) * ct,))
    report = fnn.check_jvp(lambda p: s(p["x"]), {"x": X},
                           jvp=lambda q, t: jnp.cos(q["x"]) * t["x"])  # fmt: skip
    status = {r.method: r.status for r in report.rows}
    assert status["jvp"] == "pass" and status["transpose"] == "fail", str(report)


@pytest.mark.parametrize(
    "hidden, output, dtype", [("sigmoid", "sigmoid", "float64"), ("relu", "identity", "float32")]
)
def test_the_lectures_networks_forward_mode_passes(hidden, output, dtype):
    net = fnn.Network((3, 4, 2), hidden=hidden, output=output)
    params = net.init(jax.random.key(0), dtype)
    x = jax.random.normal(jax.random.key(1), (5, 3), dtype)
    report = fnn.check_jvp(lambda p: net.apply(p, x), params)
    assert report.ok, str(report)
    assert len({r.leaf for r in report.rows}) == len(jax.tree_util.tree_leaves(params))


def test_check_grad_points_a_vector_function_at_check_vjp_and_check_jvp():
    with pytest.raises(ValueError, match="check_vjp for reverse mode, check_jvp for forward"):
        fnn.check_grad(lambda p: jnp.sin(p["x"]), {"x": X})
