"""locate (issue 35): the unit whose derivative is wrong, named with its argument, the line
that calls it and the line that defines its rule; no culprit in right programs. Every
planted bug is a rule written here; the oracle is the unit's own primal, differenced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import source_lines
from jax.experimental import pallas as pl

from functional_nn import GradientMismatch, check_grad, check_vjp, locate


def line_of(marker: str) -> str:
    return source_lines.line_of(__file__, marker)


def scaled_tanh_rule(scale, above=None):
    """``tanh(x) * a`` under a custom_vjp; its x cotangent ``scale`` times right (only where
    ``x > above``, given)."""

    @jax.custom_vjp
    def scaled_tanh(x, a):
        return jnp.tanh(x) * a

    def fwd(x, a):
        return scaled_tanh(x, a), (x, a)

    def bwd(res, c):  # def-scaled-tanh-bwd
        x, a = res
        dx = c * a * (1 - jnp.tanh(x) ** 2)
        wrong = scale * dx if above is None else jnp.where(x > above, scale * dx, dx)
        return wrong, jnp.sum(c * jnp.tanh(x))

    scaled_tanh.defvjp(fwd, bwd)
    return scaled_tanh


@jax.custom_vjp
def softclip(x):
    return x / (1 + jnp.abs(x))


softclip.defvjp(lambda x: (softclip(x), x), lambda x, c: (c / (1 + jnp.abs(x)) ** 2,))


@jax.custom_jvp
def smooth_relu(x):
    return jnp.logaddexp(x, 0.0)


@smooth_relu.defjvp
def _smooth_relu_jvp(p, t):
    return smooth_relu(p[0]), t[0] * jax.nn.sigmoid(p[0])


def params(dtype, seed=0, scale=1.0):
    k = jax.random.split(jax.random.key(seed), 4)
    return {
        "x": jax.random.normal(k[0], (5, 4), dtype),
        "w1": jax.random.normal(k[1], (4, 6), dtype),
        "w2": scale * jax.random.normal(k[2], (6, 6), dtype),
        "w3": jax.random.normal(k[3], (6, 3), dtype),
        "a": jnp.asarray(1.5, dtype),
    }


def three_rules(rule):
    def model(p):
        h = softclip(p["x"] @ p["w1"])
        h = rule(h @ p["w2"], p["a"])  # call-rule
        h = smooth_relu(h @ p["w3"])
        return jnp.sum(jax.nn.log_softmax(h))

    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_three_right_rules_and_one_wrong_give_one_culprit_its_argument_and_lines(dtype):
    report = locate(three_rules(scaled_tanh_rule(1.05)), params(dtype))
    assert len(report.culprits) == 1, report
    c = report.culprits[0]
    assert (c.name, c.kind, c.argument) == ("scaled_tanh", "custom_vjp", 0)
    assert c.where == line_of("# call-rule")
    assert c.defined == line_of("# def-scaled-tanh-bwd")
    assert 0.03 < c.error < 0.07  # 5% off, normwise
    # four units, every other one checked and passing (the log_softmax's stop_gradient too)
    kinds = sorted({(u["name"], u["kind"]) for u in report.units})
    assert kinds == [("scaled_tanh", "custom_vjp"), ("smooth_relu", "custom_jvp"),
                     ("softclip", "custom_vjp"), ("stop_gradient", "stop_gradient")]  # fmt: skip
    right = locate(three_rules(scaled_tanh_rule(1.0)), params(dtype))
    assert right.ok and right.units, right
    assert '"culprits": []' in right.to_json()


def test_a_failing_check_grad_names_the_rule_and_its_line_and_locate_false_does_not():
    f, p = three_rules(scaled_tanh_rule(1.05)), params("float64")
    report = check_grad(f, p, taylor=False)
    assert not report.ok and report.located is not None
    with pytest.raises(GradientMismatch, match=r"scaled_tanh \(custom_vjp, reverse\) argument 0"):
        report.raise_if_failed()
    assert line_of("# call-rule") in str(report)
    assert check_grad(f, p, taylor=False, locate=False).located is None
    own = check_grad(f, p, grad=jax.grad(three_rules(scaled_tanh_rule(1.0))), taylor=False)
    assert own.ok and own.located is None  # a passing check costs nothing more
    assert check_grad(three_rules(scaled_tanh_rule(1.0)), p, taylor=False).located is None


def test_a_wrong_custom_jvp_rule_used_in_reverse_mode():
    @jax.custom_jvp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    @softplus.defjvp
    def softplus_jvp(p, t):  # def-jvp
        return softplus(p[0]), 1.1 * t[0] * jax.nn.sigmoid(p[0])

    f = three_rules(scaled_tanh_rule(1.0))
    report = locate(lambda p: f(p) + jnp.sum(softplus(p["x"])), params("float64"))  # call-jvp
    names = {(c.name, c.kind, c.mode) for c in report.culprits}
    assert names == {("softplus", "custom_jvp", "reverse"), ("softplus", "custom_jvp", "forward")}
    assert {c.where for c in report.culprits} == {line_of("# call-jvp")}


def test_a_rule_wrong_only_above_2_is_found_where_the_model_feeds_it_such_inputs():
    rule = scaled_tanh_rule(1.05, above=2.0)
    x = jnp.linspace(-1.0, 1.0, 6)
    assert check_vjp(lambda p: rule(*p), (x, jnp.asarray(1.5))).ok  # unit scale: right
    report = locate(three_rules(rule), params("float64", scale=4.0))
    assert [(c.name, c.argument) for c in report.culprits] == [("scaled_tanh", 0)], report


def test_a_stop_gradient_that_cuts_a_path_is_named_and_log_softmax_s_is_not():
    def f(p):
        h = jnp.tanh(p["x"] @ p["w1"])
        return jnp.sum(jax.nn.log_softmax(h * jax.lax.stop_gradient(h)))  # call-sg

    report = locate(f, params("float64"))
    assert [(c.name, c.where) for c in report.culprits] == [("stop_gradient", line_of("# call-sg"))]
    assert sum(u["kind"] == "stop_gradient" for u in report.units) == 2  # log_softmax's passes


@pytest.mark.parametrize("wrap", ["scan", "checkpoint", "jit", "vmap"])
def test_the_wrong_rule_is_found_inside_scan_checkpoint_jit_and_vmap(wrap):
    wrong, right = scaled_tanh_rule(1.05), scaled_tanh_rule(1.0)

    def block(h, w, a, rule):
        return rule(h @ w, a)

    def f(p):
        h = softclip(p["x"] @ p["w1"])
        if wrap == "scan":
            ws = jnp.stack([p["w2"], p["w2"].T, p["w2"]])

            def body(h, w):
                return block(h, w, p["a"], wrong), None

            h, _ = jax.lax.scan(body, h, ws)
        elif wrap == "checkpoint":
            h = jax.checkpoint(lambda h: block(h, p["w2"], p["a"], wrong))(h)
        elif wrap == "jit":
            h = jax.jit(lambda h: block(h, p["w2"], p["a"], wrong))(h)
        else:
            h = jax.vmap(lambda r: block(r, p["w2"], p["a"], wrong))(h)
        return jnp.sum(jnp.sin(block(h, p["w3"].T @ p["w3"][:, :6].T, p["a"], right)))

    p = params("float64")
    p["w3"] = jax.random.normal(jax.random.key(3), (6, 6), jnp.float64)
    report = locate(f, p)
    assert not report.unopened, report  # every release's scan layout is read (0.6 to 0.12.1)
    assert report.culprits and {c.name for c in report.culprits} == {"scaled_tanh"}, report
    calls = report.culprits[0].calls
    label = {"scan": "scan(body)", "checkpoint": "checkpoint", "jit": "jit", "vmap": None}[wrap]
    if label is not None:
        assert any(c.startswith(label) for c in calls), calls
    # the right rule after it, called at its own line, is checked and passes
    assert any(u["status"] == "pass" and u["name"] == "scaled_tanh" for u in report.units)
    if wrap == "scan":
        assert {c.iteration for c in report.culprits} <= {0, 1, 2}


def _tanh_kernel(x_ref, o_ref):
    o_ref[...] = jnp.tanh(x_ref[...])


def test_a_pallas_kernel_whose_backward_is_10_percent_off_is_located():
    @jax.custom_vjp
    def kernel_tanh(x):
        out = jax.ShapeDtypeStruct(x.shape, x.dtype)
        return pl.pallas_call(_tanh_kernel, out_shape=out, interpret=True)(x)

    def fwd(x):
        y = kernel_tanh(x)
        return y, y

    kernel_tanh.defvjp(fwd, lambda y, g: (1.1 * g * (1 - y * y),))
    p = params("float32")

    def f(p):
        return jnp.sum(jnp.sin(kernel_tanh(p["x"] @ p["w1"]) @ p["w3"][:6]))  # call-kernel

    report = check_grad(f, p, taylor=False)
    assert not report.ok
    culprits = report.located.culprits
    assert [(c.name, c.where) for c in culprits] == [("kernel_tanh", line_of("# call-kernel"))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_no_culprit_in_a_right_mlp_with_relu_softplus_log_softmax_and_two_rules(dtype):
    right = scaled_tanh_rule(1.0)
    for seed in range(3):  # 10 seeds: scripts/bench/locate_figures.py
        p = params(dtype, seed)

        def f(p):
            h = jax.nn.relu(p["x"] @ p["w1"])
            h = right(softclip(h) @ p["w2"], p["a"])
            h = jax.nn.softplus(h @ p["w3"])
            return jnp.sum(jax.nn.log_softmax(h))

        report = locate(f, p)
        assert report.ok, report
        assert len(report.units) >= 3


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="real scalar"):
        locate(lambda p: p["x"], params("float64"))
    with pytest.raises(ValueError, match="cotangent must be"):
        locate(lambda p: jnp.sum(p["x"]), params("float64"), cotangent="mine")
    report = locate(lambda p: jnp.sum(jnp.sin(p["x"])), params("float64"))
    assert report.ok and report.units == [] and np.isfinite(report.seconds)
