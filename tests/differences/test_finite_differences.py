"""Finite differences: orders of accuracy, the complex step, vectorization, counts, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback
from tolerances import COMPLEX_STEP_VS_AUTODIFF, LOCAL_FD_VS_AUTODIFF

from functional_nn import (
    Layer,
    Network,
    autodiff,
    compare_gradients,
    complex_step,
    default_eps,
    eps_study,
    finite_difference_grad,
    finite_difference_jacobian,
    finite_differences,
    local_finite_differences,
    objective,
)
from functional_nn.differences._flat import ravel_params
from functional_nn.differences._network_methods import local_evaluations
from functional_nn.differences._steps import evaluations, step_sizes


def _problem(net, loss, key, n=6):
    kp, kx, ky = jax.random.split(key, 3)
    params = net.init(kp)
    if net.bias:
        params = tuple(Layer(W, 0.2 + 0 * b) for W, b in params)
    x = jax.random.normal(kx, (n, net.D))
    if loss == "bce":
        y = (jax.random.uniform(ky, (n, net.O)) > 0.5).astype(x.dtype)
    else:
        y = jax.random.normal(ky, (n, net.O))
    return params, x, y


def _error(grads, ref):
    return max(c.normwise for c in compare_gradients(grads, ref))


# -- accuracy -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_orders_of_accuracy_are_measured_not_assumed(hidden, key):
    net = Network((3, 4, 2), hidden=hidden)
    params, x, y = _problem(net, "bce", key)
    _, ref = autodiff(net, "bce", params, x, y)
    J = objective(net, "bce")

    def err(scheme, eps):
        return _error(finite_difference_grad(lambda p: J(p, x, y), params, scheme, eps), ref)

    # truncation dominates at these steps: forward O(eps), central O(eps^2)
    assert 7 < err("forward", 1e-3) / err("forward", 1e-4) < 14
    assert 70 < err("central", 1e-2) / err("central", 1e-3) < 140
    study = eps_study(net, "bce", params, x, y, schemes=("forward", "central"))
    assert abs(study.orders["forward"] - 1) < 0.15
    assert abs(study.orders["central"] - 2) < 0.15
    # the V: the best step of each scheme is near its default, and far better than the ends
    for scheme in ("forward", "central"):
        errors = study.errors[scheme]
        best = study.eps[np.nanargmin(errors)]
        assert 0.01 < best / default_eps(scheme, "float64") < 100
        assert np.nanmin(errors) < 1e-3 * min(errors[1], errors[-1])


@pytest.mark.parametrize("loss, output", [("bce", "sigmoid"), ("mse", "identity")])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "identity"])
def test_complex_step_matches_autodiff(hidden, loss, output, key):
    net = Network((3, 5, 4, 2), hidden=hidden, output=output)
    params, x, y = _problem(net, loss, key)
    _, ref = autodiff(net, loss, params, x, y)
    method = functools.partial(finite_differences, net, loss, scheme="complex_step")
    _, grads = jax.jit(method)(params, x, y)
    assert _error(grads, ref) <= COMPLEX_STEP_VS_AUTODIFF


@pytest.mark.parametrize("hidden", ["sigmoid", "relu", "tanh"])
@pytest.mark.parametrize("bias", [False, True])
def test_local_finite_differences_match_autodiff(hidden, bias, key):
    net = Network((4, 3, 3, 2), hidden=hidden, bias=bias)
    params, x, y = _problem(net, "bce", key)
    _, ref = autodiff(net, "bce", params, x, y)
    local = jax.jit(functools.partial(local_finite_differences, net, "bce", return_info=True))
    r = local(params, x, y)
    kinks = sum(int(k.sum()) for k in jax.tree_util.tree_leaves(r.kinks))
    assert kinks == 0  # random data: no pre-activation within a step of 0
    assert int(r.evaluations) == local_evaluations(net, "central")
    assert _error(r.value[1], ref) <= LOCAL_FD_VS_AUTODIFF
    cs_local = functools.partial(local_finite_differences, net, "bce", scheme="complex_step")
    _, cs = jax.jit(cs_local)(params, x, y)
    assert _error(cs, ref) <= COMPLEX_STEP_VS_AUTODIFF


def test_finite_difference_jacobian_matches_jax_jacobian(key):
    W = jax.random.normal(key, (3, 4))

    def f(v):
        return jnp.tanh(W @ v)

    v = jax.random.normal(jax.random.key(1), (4,))
    for scheme, tol in (("central", 1e-9), ("complex_step", 1e-15), ("forward", 1e-6)):
        J = finite_difference_jacobian(f, v, scheme)
        assert J.shape == (3, 4)
        np.testing.assert_allclose(J, jax.jacobian(f)(v), rtol=0, atol=tol)


# -- vectorization and counts -------------------------------------------------------------------


def _recording(f, calls):
    """f, plus a host callback that records every evaluation's value, once per evaluation even
    under vmap and lax.map.

    The spy is an ``io_callback`` (unordered): a side effect, which XLA must run. A
    ``pure_callback`` is not: XLA may drop one whose result does not matter, and from jax
    0.12.1 it does at a complex step, where the spy feeds the real part of ``f`` and the
    estimate reads only the imaginary part (the count fell from P + 4 to 5, issue 33)."""

    def record(v):
        calls.append(float(v))
        return np.zeros((), v.dtype)

    def g(p):
        v = f(p)
        re = jnp.real(v)
        spy = io_callback(record, jax.ShapeDtypeStruct((), re.dtype), re, ordered=False)
        return v + spy

    return g


@pytest.mark.parametrize("scheme", ["forward", "central", "complex_step"])
def test_evaluation_counts_are_counted_not_assumed(scheme, key):
    net = Network((4, 5, 3), hidden="tanh")
    params, x, y = _problem(net, "bce", key)
    P = net.num_params()
    J = objective(net, "bce")
    calls = []
    r = finite_difference_grad(
        _recording(lambda p: J(p, x, y), calls), params, scheme, chunk_size=7, return_info=True
    )
    assert (
        len(calls)
        == r.evaluations
        == {"forward": P + 1, "central": 2 * P, "complex_step": P + 4}[scheme]  # + cross-check
    )


def test_vectorized_differences_equal_a_plain_loop_evaluation_for_evaluation(key):
    """Every vectorized evaluation of J equals the plain loop's to rounding, and so does the
    gradient. XLA rounds a batched product differently from a single one (in the last bit),
    so bit-for-bit equality does not hold across batch shapes; this bounds the difference."""
    net = Network((4, 5, 3), hidden="tanh")
    params, x, y = _problem(net, "bce", key)
    J = objective(net, "bce")
    calls = []
    P = net.num_params()  # one chunk: the callback sees every J(+) of it, then every J(-)
    grads = finite_difference_grad(
        _recording(lambda p: J(p, x, y), calls), params, "central", chunk_size=P
    )
    theta, unravel = ravel_params(params)
    h = step_sizes(theta, "central", default_eps("central", theta.dtype))
    jitted = jax.jit(lambda t: J(unravel(t), x, y))
    plus = [float(jitted(theta.at[i].add(h[i]))) for i in range(theta.size)]
    minus = [float(jitted(theta.at[i].add(-h[i]))) for i in range(theta.size)]
    looped = (np.array(plus) - np.array(minus)) / (2 * np.asarray(h))
    vectorized = np.array(calls).reshape(2, P).T  # per direction: (plus, minus)
    u = np.finfo(np.float64).eps
    scale = max(abs(v) for v in plus)
    np.testing.assert_allclose(vectorized[:, 0], plus, rtol=0, atol=4 * u * scale)
    np.testing.assert_allclose(vectorized[:, 1], minus, rtol=0, atol=4 * u * scale)
    floor = 8 * u * scale / np.asarray(h).min()
    np.testing.assert_allclose(ravel_params(grads)[0], looped, rtol=0, atol=floor)


def test_chunk_sizes_change_nothing_but_rounding(key):
    net = Network((4, 5, 3), hidden="tanh")
    params, x, y = _problem(net, "bce", key)
    f = functools.partial(objective(net, "bce"), x=x, y=y)
    theta, _ = ravel_params(params)
    results = {
        c: ravel_params(finite_difference_grad(f, params, chunk_size=c))[0] for c in (1, 7, 64)
    }
    floor = 8 * np.finfo(np.float64).eps * abs(float(f(params))) / default_eps("central", "float64")
    for c in (1, 7):
        np.testing.assert_allclose(results[c], results[64], rtol=0, atol=floor)
    assert theta.size == 43


def test_local_evaluations_are_the_sum_of_local_input_sizes():
    net = Network(
        (4, 3, 2), bias=False
    )  # dJ/dy_hat: 2; dh/dw(1): 12; dy_hat/dw(2): 6; dy_hat/dh: 3
    assert local_evaluations(net, "complex_step") == 2 + 12 + 6 + 3
    assert local_evaluations(net, "central") == 2 * (2 + 12 + 6 + 3)
    assert local_evaluations(net, "forward") == (2 + 12 + 6 + 3) + 4
    biased = Network((4, 3, 2))
    assert local_evaluations(biased, "complex_step") == 2 + (12 + 3) + (6 + 2 + 3)
    assert evaluations("central", 18) == 36 and evaluations("forward", 18) == 19
    assert evaluations("complex_step", 18) == 18 + 4  # the cross-check against central


def test_default_eps_follows_scheme_and_dtype():
    u64, u32 = np.finfo(np.float64).eps, np.finfo(np.float32).eps
    assert default_eps("forward", "float64") == pytest.approx(np.sqrt(u64))
    assert default_eps("central", "float64") == pytest.approx(u64 ** (1 / 3))
    assert default_eps("central", "float32") == pytest.approx(u32 ** (1 / 3))
    assert default_eps("complex_step", "float64") == pytest.approx(u64)


def test_step_scales_with_the_parameter_and_is_exactly_representable():
    theta = jnp.array([0.0, 0.5, -3.0, 1e3])
    h = step_sizes(theta, "central", 1e-5)
    np.testing.assert_allclose(h, 1e-5 * np.array([1.0, 1.0, 3.0, 1e3]), rtol=1e-10)
    assert bool(jnp.all((theta + h) - theta == h))


# -- bad input ----------------------------------------------------------------------------------


def test_bad_arguments_get_clear_errors():
    f = lambda p: jnp.sum(p**2)  # noqa: E731
    p = jnp.ones(3)
    with pytest.raises(ValueError, match=r"eps must be a real number in \(0.0, 1.0\); got 0"):
        finite_difference_grad(f, p, eps=0)
    with pytest.raises(ValueError, match=r"eps must be a real number in \(0.0, 1.0\); got -1e-06"):
        finite_difference_grad(f, p, eps=-1e-6)
    with pytest.raises(ValueError, match="unknown scheme 'backward'"):
        finite_difference_grad(f, p, scheme="backward")
    with pytest.raises(ValueError, match=r"f must return a scalar; got shape \(3,\)"):
        finite_difference_grad(lambda q: q**2, p)
    with pytest.raises(ValueError, match="chunk_size must be an int >= 1; got 0"):
        finite_difference_grad(f, p, chunk_size=0)
    with pytest.raises(ValueError, match="complex-analytic.*abs"):
        finite_difference_grad(lambda q: jnp.sum(jnp.abs(q)), p, scheme="complex_step")
    with pytest.raises(ValueError, match="bfloat16 has 8 significant bits"):
        finite_difference_grad(f, p.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match="float16"):
        finite_differences(*_half_problem())
    with pytest.raises(ValueError, match="must be floating point"):
        finite_difference_grad(f, jnp.ones(3, int))


def _half_problem():
    net = Network((2, 1))
    params = tuple(Layer(W.astype(jnp.float16), b.astype(jnp.float16))
                   for W, b in net.init(jax.random.key(0)))  # fmt: skip
    x = jnp.ones((3, 2), jnp.float16)
    return net, "bce", params, x, jnp.ones((3, 1), jnp.float16)


# -- issue 12: eps in (0, 1), and a complex step that never returns a wrong gradient -----------


@pytest.mark.parametrize("eps", [1e10, 1e300, 1.0, float("nan"), float("inf")])
def test_eps_outside_zero_one_is_refused(eps):
    with pytest.raises(ValueError, match=r"eps must be a real number in \(0.0, 1.0\)"):
        finite_difference_grad(lambda q: jnp.sum(q**2), jnp.ones(3), eps=eps)


def test_eps_as_a_bool_is_refused_and_numpy_or_jax_scalars_are_welcome():
    f, p = (lambda q: jnp.sum(q**2)), jnp.ones(3)
    with pytest.raises(TypeError, match="eps must be a real number.*True"):
        finite_difference_grad(f, p, eps=True)
    for eps in (np.float32(1e-4), np.float64(1e-5), jnp.float64(1e-5), jnp.asarray(1e-5)):
        np.testing.assert_allclose(finite_difference_grad(f, p, eps=eps), 2 * p, rtol=1e-6)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        finite_difference_grad(f, p, chunk_size=True)


@pytest.mark.parametrize(
    "f",
    [
        lambda w: jnp.sum(w * jnp.conj(w)),  # complex output, not analytic: reads 0
        lambda w: jnp.sum(jnp.logaddexp(w, 0.0)),  # a kernel that drops the imaginary part
    ],
    ids=["conj", "logaddexp"],
)
def test_complex_step_of_a_non_analytic_function_is_refused_never_wrong(f):
    w = jnp.array([0.5, -1.0, 2.0])
    with pytest.raises(ValueError, match="not complex-analytic"):
        finite_difference_grad(f, w, scheme="complex_step")
    # under jit nothing can be raised: nan everywhere, never a wrong number
    g = jax.jit(lambda q: finite_difference_grad(f, q, scheme="complex_step"))(w)
    assert bool(jnp.all(jnp.isnan(g)))
    # central differences, as the message says, are right
    np.testing.assert_allclose(finite_difference_grad(f, w), jax.grad(lambda q: jnp.real(f(q)))(w),
                               rtol=1e-7)  # fmt: skip


def test_complex_step_of_an_analytic_function_passes_its_cross_check():
    w = jnp.array([0.5, -1.0, 2.0])
    g = finite_difference_grad(lambda q: jnp.sum(jnp.exp(q) * jnp.sin(q)), w, "complex_step")
    np.testing.assert_allclose(g, jnp.exp(w) * (jnp.sin(w) + jnp.cos(w)), rtol=1e-14)


# -- QA: steps lost to rounding, non-finite params, labels --------------------------------------


def _f32_problem():
    net = Network((2, 1))
    params = tuple(Layer(W.astype(jnp.float32), b.astype(jnp.float32))
                   for W, b in net.init(jax.random.key(0)))  # fmt: skip
    return net, "bce", params, jnp.ones((3, 2), jnp.float32), jnp.ones((3, 1), jnp.float32)


@pytest.mark.parametrize("eps", [1e-9, 1e-40, 1e-300])
@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_eps_below_machine_epsilon_is_refused_naming_eps_and_dtype(eps, scheme):
    p = jnp.ones(2, jnp.float32)
    with pytest.raises(ValueError, match=r"finite_difference_grad: eps=.* machine epsilon of "
                                         r"float32"):  # fmt: skip
        finite_difference_grad(lambda q: jnp.sum(q**2), p, scheme, eps)
    with pytest.raises(ValueError, match=r"^finite_differences: eps=.* float32"):
        finite_differences(*_f32_problem(), scheme=scheme, eps=eps)
    with pytest.raises(ValueError, match=r"^local_finite_differences: eps=.* float32"):
        local_finite_differences(*_f32_problem(), scheme=scheme, eps=eps)


def test_complex_step_eps_that_underflows_is_refused_and_a_tiny_one_is_not():
    f = lambda q: jnp.sum(q**2)  # noqa: E731
    p = jnp.ones(2, jnp.float32)
    for eps in (1e-40, 1e-300):
        with pytest.raises(ValueError, match=r"eps=.* complex step in float32.*sqrt\(tiny\)"):
            finite_difference_grad(f, p, "complex_step", eps)
    np.testing.assert_allclose(finite_difference_grad(f, p, "complex_step", 1e-9), 2 * p)


def test_non_finite_params_are_refused_naming_the_leaf():
    f = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"finite_difference_grad: params\['w'\] has 1 non-fin"):
        finite_difference_grad(f, {"w": jnp.array([jnp.nan, 1.0])})
    net, loss, params, x, y = _f32_problem()
    bad = (Layer(params[0].W, params[0].b.at[0].set(jnp.inf)),)
    with pytest.raises(ValueError, match=r"^finite_differences: params\[0\]\.b has 1 non-finite"):
        finite_differences(net, loss, bad, x, y)
    with pytest.raises(ValueError, match=r"^local_finite_differences: params\[0\]\.b has 1 non"):
        local_finite_differences(net, loss, bad, x, y)


def test_complex_step_errors_are_labelled_complex_step():
    net, loss, params, x, y = _f32_problem()
    bad = (Layer(params[0].W.at[0, 0].set(jnp.nan), params[0].b),)
    with pytest.raises(ValueError, match=r"^complex_step: params\[0\]\.W has 1 non-finite"):
        complex_step(net, loss, bad, x, y)


def test_complex_step_passes_an_error_of_fs_own_through_unchanged():
    """An error f raises on real input too (a shape bug) is f's, not a refusal of the complex
    step: it comes through as f raised it, not as advice to use central differences."""
    W = jnp.ones((4, 2))
    with pytest.raises(TypeError, match="dot_general"):
        finite_difference_jacobian(lambda v: jnp.tanh(W @ v), jnp.ones(3), "complex_step")
    with pytest.raises(ValueError, match=r"f must return a scalar; got shape \(3,\)") as info:
        finite_difference_grad(lambda q: q**2, jnp.ones(3), "complex_step")
    assert "complex" not in str(info.value)
    with pytest.raises(ValueError, match="needs f to accept complex parameters.*floor"):
        finite_difference_grad(lambda q: jnp.sum(jnp.floor(q)), jnp.ones(3), "complex_step")


def test_complex_step_of_an_empty_output_is_an_empty_jacobian():
    J = finite_difference_jacobian(lambda v: v[:0] * 2, jnp.ones(3), "complex_step")
    assert J.shape == (0, 3)
