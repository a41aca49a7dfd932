"""check_grad on any function of any pytree: right code passes in float64 and float32, planted
bugs fail and are located by leaf, and the checker's own parts (the complex step's validation,
the per-leaf verdict, the Taylor slope, the second order) each carry a verdict of their own."""

import jax
import jax.numpy as jnp
import pytest

import functional_nn as fnn
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE

DTYPES = ["float64", "float32"]
OFF = {"float64": 0.01, "float32": 0.05}  # one entry off by 1% (5% in float32)


def _cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def _normal(seed, shapes, dtype="float64"):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return {
        n: jax.random.normal(k, s, dtype) for k, (n, s) in zip(keys, shapes.items(), strict=True)
    }


def _failed(report, method="grad"):
    return {r.leaf for r in report.failures if r.method == method}


# -- functions others wrote (module level: their compiled programs are shared) -----------------

X = jax.random.normal(jax.random.key(10), (5, 3))
Y = (jax.random.uniform(jax.random.key(11), (5, 2)) > 0.5) * 1.0


def mlp(p):
    """A dict of params: a small tanh network with BCE on logits (jax.nn.log_sigmoid)."""
    h = jnp.tanh(X.astype(p["W1"].dtype) @ p["W1"].T + p["b1"][None, :])
    z = h @ p["W2"].T
    y = Y.astype(z.dtype)
    return -jnp.sum(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))


def mlp_params(seed, dtype):
    return _normal(seed, {"W1": (3, 3), "b1": (3,), "W2": (2, 3)}, dtype)


def nested(p):
    """Nested params: a tuple and a list inside a dict."""
    (A, c), [B] = p["enc"], p["dec"]
    return jnp.sum(jnp.sin(A @ c) * B) + jnp.sum(jnp.exp(0.3 * c))


def nested_params(seed, dtype):
    q = _normal(seed, {"A": (3, 4), "c": (4,), "B": (3,)}, dtype)
    return {"enc": (q["A"], q["c"]), "dec": [q["B"]]}


SIGNAL = jnp.sin(jnp.arange(12.0))


def conv(p):
    """A layer the library does not have: a 1-d convolution (jnp.convolve drops the imaginary
    part of a complex step with JAX 0.10.2 on CPU, so the check must fall back)."""
    s = SIGNAL.astype(p["k"].dtype)
    return jnp.sum(jnp.tanh(jnp.convolve(s, p["k"], mode="valid") + p["b"]) ** 2)


def conv_params(seed, dtype):
    return _normal(seed, {"k": (3,), "b": ()}, dtype)


@jax.custom_vjp
def softplus_sum(p):
    """A custom_vjp rule written for stability, at top level."""
    return jnp.sum(jnp.logaddexp(p["w"], 0.0) * p["a"])


def _sp_fwd(p):
    return softplus_sum(p), p


def _sp_bwd(p, ct):
    return ({"w": ct * jax.nn.sigmoid(p["w"]) * p["a"],
             "a": ct * jnp.logaddexp(p["w"], 0.0)},)  # fmt: skip


softplus_sum.defvjp(_sp_fwd, _sp_bwd)


@jax.custom_jvp
def log1pexp(x):
    return jnp.log1p(jnp.exp(x))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp(x), jax.nn.sigmoid(x) * t


@jax.custom_jvp
def log1pexp_wrong(x):
    return jnp.log1p(jnp.exp(x))


@log1pexp_wrong.defjvp
def _log1pexp_wrong_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return log1pexp_wrong(x), jax.nn.sigmoid(x) * t * (1 + 0.5 * (x > 0))  # wrong for x > 0


def jvp_rule(p):
    return jnp.sum(log1pexp(p["u"]) * p["v"])


def jvp_rule_wrong(p):
    return jnp.sum(log1pexp_wrong(p["u"]) * p["v"])


def jvp_params(seed, dtype):
    return _normal(seed, {"u": (4,), "v": (4,)}, dtype)


def logistic(p):
    """Logistic regression's J, with its gradient derived by hand below."""
    z = X.astype(p["w"].dtype) @ p["w"] + p["b"]
    y = Y[:, 0].astype(z.dtype)
    return jnp.sum(jnp.logaddexp(0.0, z) - y * z)


def logistic_grad(p):
    z = X.astype(p["w"].dtype) @ p["w"] + p["b"]
    delta = jax.nn.sigmoid(z) - Y[:, 0].astype(z.dtype)  # dJ/dz = y_hat - y
    return {"w": X.astype(z.dtype).T @ delta, "b": jnp.sum(delta)}


def logistic_params(seed, dtype):
    return _normal(seed, {"w": (3,), "b": ()}, dtype)


CASES = {
    "dict mlp": (mlp, mlp_params, None),
    "nested": (nested, nested_params, None),
    "convolution": (conv, conv_params, None),
    "custom_vjp": (softplus_sum, lambda s, d: _normal(s, {"w": (4,), "a": (4,)}, d), None),
    "custom_jvp": (jvp_rule, jvp_params, None),
    "hand-derived": (logistic, logistic_params, logistic_grad),
}


# -- right code passes --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_right_gradients_pass_in_float64_and_float32(name, dtype):
    f, make, grad = CASES[name]
    for seed in (0, 1):
        report = fnn.check_grad(f, make(seed, dtype), grad=grad)
        assert report.ok, str(report)
        assert report.dtype == dtype
        assert {r.method for r in report.rows} == {"grad", "taylor"}
        orders = [r.value for r in report.rows if r.method == "taylor" and r.status == "pass"]
        assert orders and all(o > (1.8 if dtype == "float64" else 1.5) for o in orders)


def test_references_most_exact_first():
    """The primal of a top-level custom rule; the complex step where f is analytic; central
    differences where the complex step is refused or fails its validation."""
    refs = {
        name: fnn.check_grad(f, make(0, "float64"), grad=grad, taylor=False).reference
        for name, (f, make, grad) in CASES.items()
    }
    assert refs["custom_vjp"] == "autodiff of the primal"
    assert refs["custom_jvp"] == "complex_step"  # inside f, not at top level
    assert refs["nested"] == "complex_step"
    # jnp.convolve drops the imaginary part: its kernel takes central differences, while the
    # bias, added after it, keeps the complex step; the report names both, most exact first
    # (a tie broken by set order once made this name change with PYTHONHASHSEED)
    assert refs["convolution"] == "complex_step + central"
    assert refs["hand-derived"] == "central"  # jnp.logaddexp drops it too


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_passes_for_right_code(dtype):
    report = fnn.check_grad(nested, nested_params(2, dtype), order=2)
    assert report.ok, str(report)
    assert {r.leaf for r in report.rows if r.method == "hvp"} == {
        "['dec'][0]", "['enc'][0]", "['enc'][1]"
    }  # fmt: skip


# -- planted bugs fail, located by leaf ---------------------------------------------------------


def _planted(f, mutate):
    def grad(p):
        return mutate(jax.grad(f)(p))

    return grad


BUGS = {
    "sign flip of one leaf": (lambda g: {**g, "W2": -g["W2"]}, "['W2']"),
    "one entry off": (None, "['W1']"),  # filled per dtype below
    "transposed leaf": (lambda g: {**g, "W1": g["W1"].T}, "['W1']"),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bug", sorted(BUGS))
def test_planted_bugs_fail_and_are_located_by_leaf(bug, dtype):
    mutate, leaf = BUGS[bug]
    params = mlp_params(3, dtype)
    if mutate is None:  # the largest entry of W1, off by 1% (float64) or 5% (float32)
        g = jax.grad(mlp)(params)["W1"]
        i = jnp.unravel_index(jnp.argmax(jnp.abs(g)), g.shape)

        def mutate(g):
            return {**g, "W1": g["W1"].at[i].multiply(1 + OFF[dtype])}

    report = fnn.check_grad(mlp, params, grad=_planted(mlp, mutate))
    assert _failed(report) == {leaf}, str(report)
    assert all(r.leaf == leaf for r in report.failures)  # no correct leaf fails beside it
    with pytest.raises(fnn.GradientMismatch, match=r"grad \['W"):
        report.raise_if_failed()


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_wrong_custom_jvp_fails(dtype):
    params = {"u": jnp.array([-1.0, 0.5, 2.0, -0.3], dtype), "v": jnp.ones(4, dtype)}
    assert fnn.check_grad(jvp_rule, params).ok
    report = fnn.check_grad(jvp_rule_wrong, params)
    assert _failed(report) == {"['u']"}, str(report)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_misplaced_stop_gradient_fails_only_the_second_order(dtype):
    """Values right, derivative wrong: grad of sum(w^3 * a) with stop_gradient on w."""

    def f(p):
        return jnp.sum(p["w"] ** 3 * p["a"])

    def grad(p):
        w = jax.lax.stop_gradient(p["w"])  # misplaced: the value is right, its jvp is not
        return {"w": 3 * w**2 * p["a"], "a": p["w"] ** 3}

    params = _normal(4, {"w": (3,), "a": (3,)}, dtype)
    assert fnn.check_grad(f, params, grad=grad).ok
    report = fnn.check_grad(f, params, grad=grad, order=2)
    assert _failed(report, "hvp") == {"['w']"} and _failed(report) == set(), str(report)


def big_and_small(p):
    """A 20,000-entry leaf whose gradient is 1e5 times that of a 10-entry leaf."""
    return 1e5 * jnp.sum(jnp.sin(p["big"])) + jnp.sum(jnp.sin(p["small"]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_sign_flip_in_a_small_leaf_beside_a_huge_one_is_caught(dtype):
    """In float32 the small leaf's share of ``f`` (~1) sinks under ``f``'s rounding (~1e7 u):
    central differences cannot resolve it, and the complex step, which has no rounding
    from a subtraction, is taken for that leaf."""
    params = _normal(5, {"big": (20_000,), "small": (10,)}, dtype)
    assert fnn.check_grad(big_and_small, params).ok
    grad = _planted(big_and_small, lambda g: {**g, "small": -g["small"]})
    report = fnn.check_grad(big_and_small, params, grad=grad)
    assert sum(leaf.size for leaf in jax.tree_util.tree_leaves(params)) > DIRECTIONAL_ABOVE
    assert _failed(report) == {"['small']"}, str(report)
    big = next(r for r in report.rows if r.method == "grad" and r.leaf == "['big']")
    small = next(r for r in report.rows if r.method == "grad" and r.leaf == "['small']")
    assert big.shape == (4,) and small.shape == (4,)  # k = 4 random directions in each leaf


# -- kinks --------------------------------------------------------------------------------------


def relu_layer(p):
    return jnp.sum(jax.nn.relu(X @ p["W"].T + p["b"][None, :]) ** 2)


def relu_pattern(p):
    return X @ p["W"].T + p["b"][None, :] > 0


def test_pattern_marks_kinks_and_a_wrong_gradient_still_fails_beside_them():
    W = jax.random.normal(jax.random.key(6), (2, 3))
    b = -(X[0] @ W.T) + jnp.array([1e-9, 0.5])  # unit 0 of sample 0 sits on its kink
    params = {"W": W, "b": b}
    report = fnn.check_grad(relu_layer, params, pattern=relu_pattern)
    assert report.ok and any(r.status == "kink" for r in report.rows), str(report)
    wrong = _planted(relu_layer, lambda g: {**g, "W": 1.1 * g["W"]})
    assert _failed(fnn.check_grad(relu_layer, params, grad=wrong, pattern=relu_pattern)) == {
        "['W']"
    }


# -- the checker's own parts, each with a verdict of its own ------------------------------------


def test_the_taylor_slope_is_2_for_right_and_1_for_wrong_gradients():
    params = nested_params(7, "float64")
    right = fnn.check_grad(nested, params)
    wrong = fnn.check_grad(nested, params, grad=_planted(nested, lambda g: {
        "enc": (g["enc"][0], 1.5 * g["enc"][1]), "dec": g["dec"]}))  # fmt: skip
    taylor = {r.leaf: r for r in right.rows if r.method == "taylor"}
    assert taylor["['dec'][0]"].status == "skip"  # f is linear in B: r(h) is rounding only
    assert all(abs(taylor[leaf].value - 2) < 0.3 for leaf in ("['enc'][0]", "['enc'][1]"))
    bad = {r.leaf: r for r in wrong.rows if r.method == "taylor"}
    assert abs(bad["['enc'][1]"].value - 1) < 0.3 and bad["['enc'][1]"].status == "fail"
    assert bad["['enc'][0]"].status == "pass"


def test_a_complex_step_that_reads_zeros_is_not_trusted():
    """jnp.logaddexp returns complex zeros for a complex step: the validation falls back to
    central differences, and a wrong gradient still fails."""
    params = logistic_params(8, "float64")
    report = fnn.check_grad(logistic, params, grad=logistic_grad)
    assert report.ok and report.reference == "central"
    zero = fnn.check_grad(
        logistic, params, grad=lambda p: jax.tree_util.tree_map(jnp.zeros_like, p)
    )
    assert _failed(zero) == {"['w']", "['b']"}


def test_bad_arguments_get_clear_errors():
    p = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="f must return a real scalar"):
        fnn.check_grad(lambda q: q["w"] ** 2, p)
    with pytest.raises(TypeError, match="another tree structure"):
        fnn.check_grad(lambda q: jnp.sum(q["w"]), p, grad=lambda q: (q["w"],))
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        fnn.check_grad(lambda q: jnp.sum(q["w"]), p, order=3)
    # float16 is checked against its program in float64 (issue 34): refused where the program
    # cannot be raised (a bitcast reads its dtype's bits), and for a second order
    half = {"w": jnp.ones(3, jnp.float16)}
    bits = lambda q: jnp.sum(jax.lax.bitcast_convert_type(q["w"], jnp.int16) * 1.0)  # noqa: E731
    with pytest.raises(ValueError, match="computes in float16, and its float64 reference cannot"):
        fnn.check_grad(bits, half)
    with pytest.raises(ValueError, match="order=2 of a program computing in float16"):
        fnn.check_grad(lambda q: jnp.sum(q["w"] ** 3), half, order=2)


def loud_and_quiet(p):
    return 1e6 * jnp.sum(jnp.sin(p["loud"])) + jnp.sum(jnp.sin(p["quiet"]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_leaf_bars_a_quiet_leaf_is_not_swamped_by_a_loud_one(dtype):
    """Every entry compared (small P), the quiet leaf's gradient 1e6 times smaller: its sign
    flip fails it, measured against its own scale, not the loud leaf's."""
    params = _normal(9, {"loud": (3,), "quiet": (3,)}, dtype)
    assert fnn.check_grad(loud_and_quiet, params).ok
    grad = _planted(loud_and_quiet, lambda g: {**g, "quiet": -g["quiet"]})
    assert _failed(fnn.check_grad(loud_and_quiet, params, grad=grad)) == {"['quiet']"}


def test_non_finite_params_are_an_error_naming_the_leaf_not_a_failed_check():
    f = lambda q: jnp.sum(q["w"] ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"^check_grad: params\['w'\] has 1 non-finite entries"):
        fnn.check_grad(f, {"w": jnp.array([jnp.nan, 1.0])})


def test_a_gradient_of_integer_leaves_is_an_error_naming_the_leaf():
    f = lambda q: jnp.sum(q["w"] ** 2)  # noqa: E731
    grad = lambda q: {"w": jnp.array([4, 2], jnp.int32)}  # noqa: E731
    with pytest.raises(TypeError, match=r"^check_grad: the gradient's leaf \['w'\] has dtype int"):
        fnn.check_grad(f, {"w": jnp.array([2.0, 1.0])}, grad=grad)
