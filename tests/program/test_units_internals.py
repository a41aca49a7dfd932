"""The JAX internals that locate's walk reads (functional_nn/program/_layouts.py), each patched
away: the sub-program it opens is named "not opened" (its units unchecked) and no culprit is
made up; or, for the names and lines, the culprit is still found, under the primitive's name
or at "unknown line". The wrong rule sits inside each sub-program, so a walk that read the
changed layout wrongly would either crash or miss it silently."""

import jax
import jax.numpy as jnp
import pytest

from functional_nn import locate
from functional_nn.program import _layouts, _units


@jax.custom_vjp
def off_tanh(x):
    return jnp.tanh(x)


off_tanh.defvjp(lambda x: (jnp.tanh(x), x), lambda x, c: (1.05 * c * (1 - jnp.tanh(x) ** 2),))

X = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64)


def in_scan(x):
    h, _ = jax.lax.scan(lambda h, w: (off_tanh(h * w), None), x, jnp.stack([x, 2 * x]))
    return jnp.sum(jnp.sin(h))


def in_cond(x):
    return jnp.sum(jax.lax.cond(x[0] < 0, lambda h: off_tanh(h), lambda h: h, x))


def in_while(x):
    def body(c):
        i, h = c
        return i + 1, off_tanh(h)

    return jnp.sum(jax.lax.while_loop(lambda c: c[0] < 2, body, (0, x))[1])


def in_jit(x):
    return jnp.sum(jnp.sin(jax.jit(off_tanh)(x)))


def in_checkpoint(x):
    return jnp.sum(jnp.sin(jax.checkpoint(off_tanh)(x)))


def plain(x):
    return jnp.sum(jnp.sin(off_tanh(x)))  # call-plain


@pytest.fixture(autouse=True)
def fresh_cache():
    _units.holds_unit.cache_clear()
    yield
    _units.holds_unit.cache_clear()


def test_every_sub_program_is_opened_and_the_rule_found_when_nothing_is_patched():
    for f in (in_scan, in_cond, in_while, in_jit, in_checkpoint, plain):
        report = locate(f, X)
        assert not report.unopened and [c.name for c in report.culprits] == ["off_tanh"], report


@pytest.mark.parametrize(
    ("f", "name", "value", "primitive"),
    [
        (in_scan, "SCAN_PARAMS", {"no_such_param"}, "scan"),
        (in_cond, "COND_BRANCHES", "no_such_param", "cond"),
        (in_while, "WHILE_PARAMS", ("no_such_param",), "while"),
        (in_jit, "CALL_JAXPR", ("no_such_param",), "pjit"),
        (in_checkpoint, "CHECKPOINT_JAXPR", "no_such_param", "checkpoint"),
    ],
)
def test_a_layout_not_read_is_a_not_opened_row_not_a_wrong_verdict(
    monkeypatch, f, name, value, primitive
):
    monkeypatch.setattr(_layouts, name, value)
    if name == "SCAN_PARAMS":  # and the flat-tree layout of jax 0.12.1
        monkeypatch.setattr(_layouts, "SCAN_TREES", {"no_such_param"})
    report = locate(f, X)
    assert report.culprits == [], report
    assert len(report.unopened) == 1, report
    opened = report.unopened[0]
    assert opened.split(" at ")[0] in (primitive, "jit", "remat2", "checkpoint", "remat")
    assert "not opened" in report.description and "not opened" in str(report)


def test_a_custom_rule_under_a_name_not_read_is_named_not_opened(monkeypatch):
    monkeypatch.setattr(_layouts, "CUSTOM_VJP", ())
    monkeypatch.setattr(_layouts, "UNIT_PRIMITIVES", _layouts.CUSTOM_JVP + _layouts.STOP_GRADIENT)
    report = locate(plain, X)
    assert report.culprits == [] and len(report.unopened) == 1, report
    assert "a custom rule of a form locate does not read" in report.unopened[0]


def test_without_source_info_the_rule_is_still_found_at_an_unknown_line(monkeypatch):
    monkeypatch.setattr(_units, "source_line", lambda eqn: "unknown line")
    monkeypatch.setattr(_layouts, "_src", lambda debug: (None, None))
    report = locate(plain, X)
    [c] = report.culprits
    assert c.where == "unknown line"
    # no debug info: the rule's name is the primitive's, its line from the function object
    assert c.name in ("custom_vjp_call", "custom_vjp_call_jaxpr")
    assert c.defined is None or c.defined.startswith("test_units_internals.py:")
