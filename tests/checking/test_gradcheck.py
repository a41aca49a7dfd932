"""The checker: it must fail on known bugs and name the right leaf, report kinks as kinks,
and say everything as a table and as data."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import (
    GradCheckReport,
    GradientMismatch,
    Layer,
    Network,
    backprop,
    check_gradients,
    compare_gradients,
)
from functional_nn.checking._tolerances import DIRECTIONAL_ABOVE

NET = Network((4, 3, 3, 2), hidden="tanh")  # W(2) is square: it can be transposed


def _problem(net=NET, seed=0, n=5):
    kp, kb, kx, ky = jax.random.split(jax.random.key(seed), 4)
    params = tuple(
        Layer(W, jax.random.normal(k, b.shape))
        for (W, b), k in zip(net.init(kp), jax.random.split(kb, net.L + 1), strict=True)
    )
    x = jax.random.normal(kx, (n, net.D))
    y = (jax.random.uniform(ky, (n, net.O)) > 0.5).astype(x.dtype)
    return params, x, y


def _buggy(mutate):
    """backprop, with its gradient mutated: a method with a known bug."""

    def method(net, loss, params, x, y, reduction="sum"):
        J, grads = backprop(net, loss, params, x, y, reduction)
        return J, mutate(list(grads), net, params, x, y)

    return method


def _transposed(g, net, params, x, y):
    g[1] = g[1]._replace(W=g[1].W.T)
    return tuple(g)


def _sign_flipped(g, net, params, x, y):
    g[2] = g[2]._replace(W=-g[2].W)
    return tuple(g)


def _bias_of_the_wrong_layer(g, net, params, x, y):
    g[0], g[1] = g[0]._replace(b=g[1].b), g[1]._replace(b=g[0].b)
    return tuple(g)


def _layer1_without_act(g, net, params, x, y):
    """Layer 1's gradient without act'(z(1)): delta(1) = g(1) instead of g(1) * act'(z(1))."""
    tr = net.trace(params, x)
    delta = jax.nn.sigmoid(tr.z[3]) - y  # (N, O)
    delta = (delta @ params[2].W) * net.activation(2).derivative(tr.z[2])
    g1 = delta @ params[1].W  # g(1) = dJ/dh(1); the bug: no act'(z(1))
    return (Layer(g1.T @ x, g1.sum(axis=0)), g[1], g[2])


MUTATIONS = {
    "transposed leaf": (_transposed, {"[1].W"}),
    "sign flip in one layer": (_sign_flipped, {"[2].W"}),
    "bias gradient of the wrong layer": (_bias_of_the_wrong_layer, {"[0].b", "[1].b"}),
    "missing derivative factor": (_layer1_without_act, {"[0].W", "[0].b"}),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_checker_fails_on_a_known_bug_and_names_the_leaf(name):
    mutate, leaves = MUTATIONS[name]
    params, x, y = _problem()
    report = check_gradients(NET, "bce", params, x, y, methods={"buggy": _buggy(mutate)})
    assert not report.ok
    assert {r.leaf for r in report.failures} == leaves
    assert all(r.method == "buggy" for r in report.failures)
    with pytest.raises(GradientMismatch, match=sorted(leaves)[0].replace("[", r"\[")):
        report.raise_if_failed()


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_directional_check_catches_the_same_bugs(name):
    mutate, _ = MUTATIONS[name]
    params, x, y = _problem()
    report = check_gradients(
        NET, "bce", params, x, y, methods={"buggy": _buggy(mutate)}, directional=True
    )
    directional = {r.method: r for r in report.rows if r.leaf == "directional"}
    assert directional["buggy"].status == "fail"
    assert directional["autodiff"].status == "pass"  # the reference passes the same check
    # k = 16 directions in each leaf, four evaluations each (Richardson central differences)
    assert directional["buggy"].evaluations == 4 * 16 * len(jax.tree_util.tree_leaves(params))


def test_a_correct_method_passes_every_builtin_check():
    params, x, y = _problem()
    report = check_gradients(NET, "bce", params, x, y)
    assert report.ok, str(report)
    assert {r.method for r in report.rows} == {
        "jacobian_chain", "backprop", "finite_differences", "complex_step",
        "local_finite_differences",
    }  # fmt: skip
    evaluations = {r.method: r.evaluations for r in report.rows}
    P = NET.num_params()
    assert evaluations["finite_differences"] == 2 * P
    assert evaluations["complex_step"] == P + 4  # and its cross-check against central
    assert report.raise_if_failed() is report


def test_report_is_a_table_and_data():
    params, x, y = _problem()
    report = check_gradients(NET, "mse", params, x, y, methods={"bp": backprop})
    text = str(report)
    assert "gradient check against 'autodiff'" in text and "[2].W" in text and "OK" in text
    data = json.loads(report.to_json())
    assert data["ok"] is True and data["reference"] == "autodiff"
    leaves = [r["leaf"] for r in data["rows"]]
    assert leaves == ["J", "[0].W", "[0].b", "[1].W", "[1].b", "[2].W", "[2].b"]
    for row in data["rows"]:
        assert {"error", "max_abs", "max_rel", "index", "value", "reference_value", "tolerance",
                "status", "evaluations", "seconds"} <= set(row)  # fmt: skip
        assert row["tolerance"] == 1e-12 and row["status"] == "pass"


def test_another_reference_can_be_named():
    params, x, y = _problem()
    report = check_gradients(
        NET, "bce", params, x, y, methods={"backprop": backprop, "bad": _buggy(_sign_flipped)},
        reference="backprop",
    )  # fmt: skip
    assert report.reference == "backprop"
    assert {r.leaf for r in report.failures} == {"[2].W"}
    with pytest.raises(ValueError, match="reference 'nope' is neither"):
        check_gradients(NET, "bce", params, x, y, reference="nope")


# -- kinks --------------------------------------------------------------------------------------


def _kinked(offset):
    """A ReLU network whose first hidden unit has pre-activation ``offset`` on sample 0."""
    net = Network((3, 4, 1), hidden="relu", output="identity")
    kp, kx, ky = jax.random.split(jax.random.key(3), 3)
    params = net.init(kp)
    x = jax.random.normal(kx, (6, 3))
    W, b = params[0]
    b = b.at[0].set(offset - W[0] @ x[0])  # z(1)_0 of sample 0 is now `offset`
    params = (Layer(W, b), params[1])
    y = jax.random.normal(ky, (6, 1))
    return net, params, x, y


def test_a_step_across_a_relu_kink_is_reported_as_kink():
    net, params, x, y = _kinked(1e-9)  # well within a step (about 6e-6) of 0
    assert abs(float(net.trace(params, x).z[1][0, 0])) < 1e-8
    report = check_gradients(net, "mse", params, x, y)
    assert report.ok
    by_method = {}
    for r in report.rows:
        by_method.setdefault(r.method, []).append(r)
    for method in ("finite_differences", "local_finite_differences"):
        rows = by_method[method]
        assert any(r.status == "kink" and r.kinks > 0 for r in rows), method
        assert all(r.status in ("pass", "kink") for r in rows)
    # the complex step never leaves the branch it starts on: no kink to report
    assert all(r.status == "pass" for r in by_method["complex_step"])
    assert "kink" in str(report) and "left out" in str(report)


def test_the_same_network_away_from_the_kink_passes_with_no_kinks():
    net, params, x, y = _kinked(0.5)
    report = check_gradients(net, "mse", params, x, y)
    assert report.ok and all(r.status == "pass" and r.kinks == 0 for r in report.rows)


def test_a_wrong_gradient_fails_even_beside_a_kink():
    net, params, x, y = _kinked(1e-9)

    def wrong(net, loss, params, x, y, reduction="sum"):
        J, g = backprop(net, loss, params, x, y, reduction)
        return J, (g[0], g[1]._replace(W=2 * g[1].W))

    report = check_gradients(
        net, "mse", params, x, y, methods={"wrong": wrong}, reference="autodiff"
    )
    assert {r.leaf for r in report.failures} == {"[1].W"}


# -- scale and refusals -------------------------------------------------------------------------


def test_large_networks_get_the_directional_check_instead_of_global_differences():
    net = Network((100, 100, 2))
    assert net.num_params() > DIRECTIONAL_ABOVE
    params, x, y = _problem(net, n=3)
    report = check_gradients(net, "bce", params, x, y)
    methods = {r.method for r in report.rows}
    assert "finite_differences" not in methods and "complex_step" not in methods
    directional = [r for r in report.rows if r.leaf == "directional"]
    assert {r.method for r in directional} == {"autodiff", "jacobian_chain", "backprop"}
    leaves = len(jax.tree_util.tree_leaves(params))
    assert all(r.status == "pass" and r.evaluations == 4 * 16 * leaves for r in directional)
    assert report.ok


def test_float16_and_unknown_dtypes_are_refused():
    net = Network((2, 1))
    params = tuple(Layer(W.astype(jnp.float16), b.astype(jnp.float16))
                   for W, b in net.init(jax.random.key(0)))  # fmt: skip
    with pytest.raises(ValueError, match="dtype float16; expected float32 or float64"):
        check_gradients(net, "bce", params, jnp.ones((2, 2), jnp.float16), jnp.ones((2, 1)))


def test_compare_gradients_structure_and_nan():
    a = (Layer(jnp.ones((2, 2)), None),)
    with pytest.raises(TypeError, match="different tree structures"):
        compare_gradients(a, (Layer(jnp.ones((2, 2)), jnp.ones(2)),))
    with pytest.raises(ValueError, match=r"leaf \[0\].W has shape \(2, 2\) in a but \(2, 3\)"):
        compare_gradients(a, (Layer(jnp.ones((2, 3)), None),))
    c = compare_gradients((Layer(jnp.array([[1.0, jnp.nan]]), None),),
                          (Layer(jnp.array([[1.0, 2.0]]), None),))[0]  # fmt: skip
    assert c.normwise == np.inf and c.index == (0, 1)


def test_compare_gradients_is_normwise_and_reports_the_worst_entry():
    a = (Layer(jnp.array([[10.0, 1e-6]]), None),)
    b = (Layer(jnp.array([[10.0, 2e-6]]), None),)
    (c,) = compare_gradients(a, b)
    assert c.normwise == pytest.approx(1e-6 / 10)  # the near-zero entry does not dominate
    assert c.max_rel == pytest.approx(0.5) and c.index == (0, 1)
    assert c.a_value == pytest.approx(1e-6) and c.b_value == pytest.approx(2e-6)


def test_report_type():
    params, x, y = _problem()
    report = check_gradients(NET, "bce", params, x, y, methods={"bp": backprop})
    assert isinstance(report, GradCheckReport)


def test_nothing_to_check_is_an_error():
    params, x, y = _problem()
    with pytest.raises(ValueError, match="nothing to check"):
        check_gradients(NET, "bce", params, x, y, methods={})
    with pytest.raises(ValueError, match="nothing to check"):
        check_gradients(NET, "bce", params, x, y, methods={"autodiff": backprop})


def test_the_data_is_validated_as_the_methods_validate_it():
    params, x, y = _problem()
    with pytest.raises(ValueError, match="check_gradients.*target"):
        check_gradients(NET, "bce", params, x, 3 * y, methods={"bp": backprop})
    with pytest.raises(ValueError, match="check_gradients"):
        check_gradients(NET, "bce", params, x[:, :3], y, methods={"bp": backprop})


# -- issue 11: checks pin the matmul precision ---------------------------------------------------


def test_checkers_pin_the_highest_matmul_precision_whatever_the_default(tmp_path):
    """With the process default at bfloat16 (what TPUs use; TF32 on GPUs), every matmul in
    every program the checkers compile carries precision HIGHEST (read from the lowered
    StableHLO that JAX dumps); a user's own program keeps the default."""
    import functional_nn as fnn

    params, x, y = _problem(n=7)  # a batch size no other test uses: every program is new
    f = lambda p: jnp.sum(jnp.tanh(p["W"] @ x.T))  # noqa: E731
    p = {"W": params[0].W}
    dump = tmp_path / "ir"
    jax.config.update("jax_dump_ir_to", str(dump))
    try:
        with jax.default_matmul_precision("bfloat16"):
            methods = {"bp": backprop, "fd": fnn.finite_differences}
            check_gradients(NET, "bce", params, x, y, methods=methods, directional=True)
            fnn.check_grad(f, p, order=2)
            fnn.check_vjp(lambda q: jnp.tanh(q["W"] @ x.T), p)
            fnn.eps_study(NET, "bce", params, x, y, schemes=("central",), eps=[1e-4, 1e-3])
            checked = sorted(dump.glob("*.mlir"))
            jax.jit(NET.apply).lower(params, x).compile()  # the user's own program
    finally:
        jax.config.update("jax_dump_ir_to", "")
    dots = [line for path in checked for line in path.read_text().splitlines()
            if "stablehlo.dot_general" in line]  # fmt: skip
    assert len(dots) >= 10
    assert all("precision = [HIGHEST, HIGHEST]" in line for line in dots), [
        line for line in dots if "HIGHEST" not in line
    ][:3]
    user = [line for path in sorted(dump.glob("*.mlir")) if path not in checked
            for line in path.read_text().splitlines() if "dot_general" in line]  # fmt: skip
    assert user and all("HIGHEST" not in line for line in user)


# -- QA: every option of check_gradients is checked, none ignored -------------------------------


@pytest.mark.parametrize(
    "tolerances, error, match",
    [
        (
            {"backprp": 1e-6},
            ValueError,
            r"tolerances has the key 'backprp'.*known keys: \['bp', "
            r"'J', 'directional'\]",
        ),  # fmt: skip
        ({"bp": -1e-6}, ValueError, r"tolerances\['bp'\] must be a real number in \[0.0, inf\)"),
        ({"bp": float("nan")}, ValueError, r"tolerances\['bp'\] must be a real number"),
        ({"bp": "1e-6"}, TypeError, r"tolerances\['bp'\] must be a real number.*str"),
        ([1e-6], TypeError, r"tolerances must be a Mapping of name -> bar.*got list"),
    ],
)
def test_tolerances_are_checked(tolerances, error, match):
    params, x, y = _problem()
    with pytest.raises(error, match=f"^check_gradients: {match}"):
        check_gradients(NET, "bce", params, x, y, methods={"bp": backprop}, tolerances=tolerances)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"directional": True, "k": 0}, ValueError, r"k must be an int >= 1; got 0"),
        ({"k": True}, TypeError, r"k must be an int >= 1; got True \(a bool\)"),
        ({"directional": "yes"}, TypeError, r"directional must be None \(automatic\), True or "),
        ({"dtype": "float17"}, ValueError, r"dtype must be 'float32', 'float64' or None.*float17"),
        ({"dtype": "int32"}, ValueError, r"dtype must be 'float32', 'float64' or None.*int32"),
        ({"methods": ["backprop"]}, TypeError, r"methods must be a Mapping of name -> gradient"),
        ({"methods": {"a": "backprop"}}, TypeError, r"methods\['a'\] must be a callable gradient"),
        ({"key": 0}, TypeError, r"key must be a JAX PRNG key"),
    ],
)
def test_options_are_checked(kwargs, error, match):
    params, x, y = _problem()
    with pytest.raises(error, match=f"^check_gradients: {match}"):
        check_gradients(NET, "bce", params, x, y, **{"methods": {"bp": backprop}, **kwargs})
