"""Complex parameters and outputs, with JAX's conventions: ``jax.grad`` of a real function of
complex ``z`` is ``df/dx - i df/dy``, ``jax.vjp`` transposes under ``Re sum(a b)``. The
reference (central differences along the real and imaginary axis of every entry) shares no
code with JAX's complex autodiff; the conjugate convention (PyTorch's) fails, at its leaf."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import functional_nn as fnn

DTYPES = ["complex64", "complex128"]
RNG = np.random.default_rng(0)
Z = RNG.standard_normal(4) + 1j * RNG.standard_normal(4)
A = RNG.standard_normal((3, 4)) + 1j * RNG.standard_normal((3, 4))
X = RNG.standard_normal((5, 4))


def z(dtype):
    return jnp.asarray(Z, dtype)


def layer(dtype):
    """A complex linear layer: weights and bias complex, inputs real."""
    return {"W": jnp.asarray(A, dtype), "b": jnp.asarray(A[:, 0] / 2, dtype)}


def layer_loss(p):
    h = jnp.asarray(X, p["W"].dtype) @ p["W"].T + p["b"][None]
    return jnp.mean(jnp.abs(h) ** 2) + jnp.mean(jnp.real(h))


SCALAR = {
    "abs2": lambda z: jnp.sum(jnp.abs(z) ** 2),
    "real z3": lambda z: jnp.sum(jnp.real(z**3)),
}


def conjugated(f):
    """The gradient in the other convention, df/dx + i df/dy (PyTorch's)."""
    return lambda p: jax.tree_util.tree_map(jnp.conj, jax.grad(f)(p))


def test_the_convention_anchor():
    """JAX's own statement of its convention, and the reference's reading of it."""
    assert jax.grad(lambda z: jnp.abs(z) ** 2)(1 + 2j) == 2 - 4j
    r = fnn.check_grad(lambda z: jnp.sum(jnp.abs(z) ** 2), jnp.asarray([1 + 2j]), taylor=False)
    (row,) = r.rows
    assert row.shape == (1, 2) and r.ok  # (Re, Im) of the one entry
    # the reference is (df/dx, df/dy) = (2, 4); the gradient read as (Re g, -Im g) equals it
    assert abs(row.reference_value - row.value) < 1e-8 and row.reference_value in (
        pytest.approx(2.0), pytest.approx(4.0))  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(SCALAR))
def test_real_functions_of_complex_parameters_pass_and_the_conjugate_fails(name, dtype):
    f = SCALAR[name]
    right = fnn.check_grad(f, z(dtype))
    assert right.ok, str(right)
    assert right.dtype == dtype and "complex leaves (root)" in right.description
    wrong = fnn.check_grad(f, z(dtype), grad=conjugated(f))
    assert {(r.method, r.leaf) for r in wrong.failures} == {
        ("grad", "(root)"),
        ("taylor", "(root)"),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_complex_layer_passes_and_a_conjugated_leaf_is_named_alone(dtype):
    p = layer(dtype)
    assert fnn.check_grad(layer_loss, p).ok
    assert fnn.check_grad(layer_loss, p, order=2).ok  # Hessian-vector products too

    def wrong(p):  # b's gradient conjugated, W's right
        g = jax.grad(layer_loss)(p)
        return {"W": g["W"], "b": jnp.conj(g["b"])}

    report = fnn.check_grad(layer_loss, p, grad=wrong)
    assert {r.leaf for r in report.failures} == {"['b']"}, str(report)


def test_mixed_trees_keep_their_paths_and_real_and_held_leaves_stay_as_they_are():
    p = {"z": z("complex128"), "w": jnp.asarray([0.5, -1.5]), "step": jnp.array(3)}

    def f(p):
        return jnp.sum(jnp.abs(p["z"] * p["w"][0]) ** 2) + jnp.sum(jnp.sin(p["w"])) * p["step"]

    report = fnn.check_grad(f, p)
    assert report.ok, str(report)
    assert {r.leaf: r.shape for r in report.rows if r.method == "grad"} == {
        "['w']": (2,), "['z']": (4, 2)}  # fmt: skip
    assert "held fixed (not inexact arrays): ['step']" in report.description

    def conj_z(q):
        gz, gw = jax.grad(lambda z, w: f({**q, "z": z, "w": w}), (0, 1))(q["z"], q["w"])
        return {"z": jnp.conj(gz), "w": gw, "step": None}

    assert {r.leaf for r in fnn.check_grad(f, p, grad=conj_z).failures} == {"['z']"}


def test_a_real_gradient_for_a_complex_leaf_is_an_error_naming_it():
    with pytest.raises(
        TypeError, match=r"leaf \['b'\] has dtype float64; the parameter is complex"
    ):
        fnn.check_grad(layer_loss, layer("complex128"),
                       grad=lambda p: {**jax.grad(layer_loss)(p), "b": jnp.zeros(3)})  # fmt: skip
    with pytest.raises(ValueError, match="f must return a real scalar; got complex128"):
        fnn.check_grad(lambda z: jnp.sum(z**2), z("complex128"))


MAPS = {
    "z2": lambda z: z**2,
    "conj": jnp.conj,
    "abs": jnp.abs,
    "matmul": lambda z: jnp.asarray(A, z.dtype) @ z,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(MAPS))
def test_vjps_and_jvps_of_complex_functions_pass(name, dtype):
    for check in (fnn.check_vjp, fnn.check_jvp):
        report = check(MAPS[name], z(dtype))
        assert report.ok, str(report)
        assert "complex outputs as real pairs" in report.description or name == "abs"


def test_complex_outputs_of_real_inputs():
    x = jnp.asarray([0.3, -1.2, 2.0])
    for check in (fnn.check_vjp, fnn.check_jvp):
        assert check(lambda x: jnp.exp(1j * x) * x, x).ok


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_vjp_or_jvp_that_forgets_or_adds_a_conjugate_fails(dtype):
    """``z ** 2``: JAX's VJP is ``ct * 2z`` and JVP ``2z t`` (holomorphic: no conjugate);
    a rule with ``conj(2z)`` (the conjugate-linear convention) fails, located."""
    p = {"z": z(dtype), "s": jnp.asarray(2.0, jnp.finfo(dtype).dtype)}

    def g(p):
        return {"y": p["z"] ** 2 * p["s"]}

    def vjp(p, ct, conj=jnp.conj):
        return {"z": ct["y"] * conj(2 * p["z"]) * p["s"],
                "s": jnp.real(jnp.sum(ct["y"] * p["z"] ** 2))}  # fmt: skip

    right = fnn.check_vjp(g, p, vjp=lambda p, ct: vjp(p, ct, conj=lambda a: a))
    assert right.ok, str(right)
    wrong = fnn.check_vjp(g, p, vjp=vjp)
    assert {r.leaf for r in wrong.failures} == {"['z']"}, str(wrong)

    def jvp(p, t, conj=jnp.conj):
        return {"y": conj(2 * p["z"]) * t["z"] * p["s"] + p["z"] ** 2 * t["s"]}

    assert fnn.check_jvp(g, p, jvp=lambda p, t: jvp(p, t, conj=lambda a: a)).ok
    wrong = fnn.check_jvp(g, p, jvp=jvp)
    assert {r.leaf for r in wrong.failures} == {"['z']"}, str(wrong)


def test_a_custom_vjp_rule_on_complex_numbers_that_forgets_the_conjugate():
    @jax.custom_vjp
    def magnitude(z):
        return jnp.abs(z) ** 2

    def fwd(z):
        return magnitude(z), z

    def bwd_wrong(z, ct):  # right: ct * 2 conj(z) (df/dx - i df/dy = 2x - 2iy)
        return (ct * 2 * z,)

    magnitude.defvjp(fwd, bwd_wrong)
    report = fnn.check_grad(lambda z: jnp.sum(magnitude(z)), z("complex128"))
    assert not report.ok and {r.leaf for r in report.failures} == {"(root)"}
    assert fnn.check_vjp(magnitude, z("complex128")).failures


@pytest.mark.parametrize("seed", range(4))
def test_random_complex64_layers_give_no_false_failure(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(2, 6)), 4)
    p = {"W": jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape),
                          jnp.complex64),
         "b": jnp.asarray(rng.standard_normal(shape[0]) * (1 + 1j), jnp.complex64)}  # fmt: skip
    report = fnn.check_grad(layer_loss, p)
    assert report.ok, str(report)
