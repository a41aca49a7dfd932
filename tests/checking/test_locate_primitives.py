"""locate beyond the custom rules (issue 35): every other equation where the rules explain
nothing (a primitive of the user's own whose JVP rule is wrong), repeated layers told apart,
check_vjp located along its own cotangent. The oracle is each unit's own primal, differenced."""

import jax
import jax.numpy as jnp
import pytest
import source_lines
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from functional_nn import check_grad, check_vjp, locate


def line_of(marker: str) -> str:
    return source_lines.line_of(__file__, marker)


def user_primitive(name: str, factor: float) -> Primitive:
    """``sin`` as a primitive of the user's own (JAX's documented recipe: impl, abstract
    eval, lowering, batching, JVP), its JVP ``factor`` times right."""
    p = Primitive(name)
    p.def_impl(jnp.sin)
    p.def_abstract_eval(lambda x: jax.core.ShapedArray(x.shape, x.dtype))
    mlir.register_lowering(p, mlir.lower_fun(jnp.sin, multiple_results=False))
    batching.defvectorized(p)
    ad.defjvp(p, lambda g, x: factor * g * jnp.cos(x))
    return p


WRONG_SIN = user_primitive("wrong_sin", 1.05)
RIGHT_SIN = user_primitive("right_sin", 1.0)
W = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
M = jnp.asarray(jax.random.normal(jax.random.key(7), (4, 4)))


def model(prim):
    def f(w):
        h = jnp.tanh(w @ M.astype(w.dtype))
        h = prim.bind(h)  # call-prim
        return jnp.sum(jax.nn.log_softmax(jax.nn.softplus(h)))

    return f


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_wrong_primitive_is_found_by_a_failing_check_grad_when_no_rule_explains_it(dtype):
    w = W.astype(dtype)
    plain = locate(model(WRONG_SIN), w)  # the units alone: the custom rules are right
    assert plain.ok and all(u["kind"] != "primitive" for u in plain.units), plain
    report = check_grad(model(WRONG_SIN), w, taylor=False)
    assert not report.ok
    located = report.located
    assert [(c.name, c.kind, c.where, c.argument) for c in located.culprits] == [
        ("wrong_sin", "primitive", line_of("# call-prim"), 0)
    ], located
    assert "every other equation checked" in located.description
    # JAX's own rules of the same program (tanh, dot_general, log_softmax's max, exp, log,
    # the softplus rule, ...) all checked and none a culprit; the max's -inf start held
    assert {u["name"] for u in located.units} >= {"tanh", "dot_general", "exp", "log"}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_equation_of_a_right_program_passes(dtype):
    for seed in range(2):
        w = jax.random.normal(jax.random.key(seed), (3, 4), dtype)
        report = locate(model(RIGHT_SIN), w, primitives=True)
        assert report.ok, report
        kinds = {u["kind"] for u in report.units}
        assert {"primitive", "custom_jvp", "stop_gradient"} <= kinds, report
    with pytest.raises(ValueError, match="primitives must be"):
        locate(model(RIGHT_SIN), W, primitives="all")


def test_repeated_layers_at_one_line_are_told_apart_by_their_call():
    @jax.custom_vjp
    def act(x):  # right for |x| <= 1.5, 5% off beyond: only the layer fed such inputs fails
        return jnp.tanh(x)

    def bwd(x, c):
        return (c * (1 - jnp.tanh(x) ** 2) * jnp.where(jnp.abs(x) > 1.5, 1.05, 1.0),)

    act.defvjp(lambda x: (jnp.tanh(x), x), bwd)
    key = jax.random.split(jax.random.key(0), 3)
    scales = (0.2, 3.0, 0.2)
    ws = [jax.random.normal(k, (4, 4), jnp.float64) * s for k, s in zip(key, scales, strict=True)]

    def f(ws):
        h = jnp.full((2, 4), 0.5, jnp.float64)
        for w in ws:
            h = act(h @ w)  # one site, three calls
        return jnp.sum(jnp.sin(h))

    report = locate(f, ws)
    [c] = report.culprits
    assert (c.name, c.occurrence, c.failed, c.checked) == ("act", 1, 1, 3), report
    assert "call 2 of 3" in str(report)
    assert [u["status"] for u in report.units] == ["pass", "fail", "pass"]


def test_a_failing_check_vjp_is_located_along_its_own_first_cotangent():
    f = model(WRONG_SIN)

    def g(w):  # a vector function: its VJP is what fails
        return jax.nn.softplus(WRONG_SIN.bind(jnp.tanh(w)))  # call-vjp

    report = check_vjp(g, W)
    assert not report.ok
    assert [(c.name, c.where) for c in report.located.culprits] == [
        ("wrong_sin", line_of("# call-vjp"))
    ], report.located
    assert locate(f, W, cotangent="random").ok  # the rules alone: right


def test_no_culprit_among_every_equation_of_a_lecture_network_and_a_relu_net():
    """Two of scripts/bench/locate_figures.py's 160 right programs (10 seeds each there)."""
    import functional_nn as fnn

    net = fnn.Network((4, 5, 3, 2), hidden="relu")
    J = fnn.objective(net, "bce")
    k = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(k[1], (6, 4), jnp.float64)
    y = (jax.random.uniform(k[2], (6, 2)) > 0.5).astype(jnp.float64)
    report = locate(lambda p: J(p, x, y), net.init(k[0], jnp.float64), primitives=True)
    assert report.ok and len(report.units) > 20, report
    A = jax.random.normal(k[0], (32, 9), jnp.float32) / 2

    def relu_mlp(v):  # the non-smooth zoo's first: kinks every step can reach
        return jnp.sum(jax.nn.softplus(jax.nn.relu(A @ v) / 4))

    report = locate(relu_mlp, jax.random.normal(k[1], (9,), jnp.float32), primitives=True)
    assert report.ok, report
