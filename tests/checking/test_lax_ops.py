"""An outside suite: the float ops of JAX's own lax autodiff tests (scripts/bench/lax_ops.py).

The ops here are those on which the checkers once gave false failures (fast-varying ops
under ``sin`` in float32, ``pow``'s two arguments of one dtype, kinks and steps, a float32
output of float64 inputs, ``atan2``'s branch cut and ``bessel_i0e``'s kink crossed by a dense
direction): right code passes at three seeds in both dtypes, through ``check_grad`` and
``check_vjp``; planted VJP bugs fail on their leaf alone. ``locate`` names each plant alone at
its line and argument and finds no culprit among the equations of the right programs. The
whole table, 37 ops, runs in ``scripts/lax_suite.py`` (docs/checking.md gives its figures).
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench import lax_ops  # noqa: E402

from functional_nn.differences._blocks import LeafFunction  # noqa: E402

ONCE_FAILED = [
    "sinh", "cosh", "expm1", "pow", "max", "min", "floor", "ceil", "round", "mul out float32",
    "atan2", "bessel_i0e",
]  # fmt: skip


TWO = ("check_grad", "check_vjp")


@pytest.mark.parametrize("name", ONCE_FAILED)
def test_right_ops_pass_at_three_seeds_in_both_dtypes(name):
    op = lax_ops.BY_NAME[name]
    wrong = [
        c
        for c in (
            lax_ops.run_case(*spec) for spec in lax_ops.cases([op], plant_seeds=(), checkers=TWO)
        )  # fmt: skip
        if not c.right
    ]
    assert not wrong, "\n".join(f"{c.dtype} seed {c.seed} {c.checker}\n{c.report}" for c in wrong)


@pytest.mark.parametrize("name", ["pow", "atan2", "max", "sinh"])
def test_planted_vjp_bugs_fail_on_their_leaf_alone(name):
    op = lax_ops.BY_NAME[name]
    planted = [c for c in lax_ops.run_all([op], seeds=(), plant_seeds=(0, 2), checkers=TWO)]
    assert len(planted) == 2 * 2 * 2 * len(lax_ops.plants(op))  # dtypes, checkers, seeds
    wrong = [c for c in planted if not c.right]
    assert not wrong, "\n".join(
        f"{c.dtype} seed {c.seed} {c.checker} {c.plant}: failing {c.failing}\n{c.report}"
        for c in wrong
    )


@pytest.mark.parametrize("name", ["pow", "atan2", "max", "bessel_i0e"])
def test_locate_names_each_plant_at_its_line_and_no_culprit_in_right_programs(name):
    op = lax_ops.BY_NAME[name]
    cases = lax_ops.run_all([op], seeds=(0,), plant_seeds=(0,), checkers=("locate",))
    assert len(cases) == 2 * (1 + len(lax_ops.plants(op)))  # dtypes x (right, plants)
    wrong = [c for c in cases if not c.right]
    assert not wrong, "\n".join(f"{c.dtype} {c.plant}: {c.failing}\n{c.report}" for c in wrong)
    right = next(c for c in cases if not c.plant)
    assert "every other equation checked" in right.report  # JAX's own rules, each checked


def test_the_table_is_jaxs_less_the_complex_ops():
    assert len(lax_ops.OPS) == 37
    assert len(set(lax_ops.BY_NAME)) == 37
    assert not {"real", "imag", "complex", "conj"} & set(lax_ops.BY_NAME)
    for op in lax_ops.OPS:  # every draw is finite, where the checkers take it
        for dtype in lax_ops.DTYPES:
            args = lax_ops.args_of(op, 0, dtype)
            assert all(np.isfinite(np.asarray(op.fn(*args))).all() for _ in args), op.name


def test_a_complex_step_widens_the_other_leaves_where_an_op_asks_for_one_dtype():
    """``lax.pow(x, y)`` refuses a complex x beside a real y: the complex step of x makes y
    complex too (imaginary part zero), so pow's leaves keep the exact reference."""
    x, y = lax_ops.args_of(lax_ops.BY_NAME["pow"], 0, "float32")
    lf = LeafFunction(lambda p: jax.numpy.sum(jax.lax.pow(p[0], p[1])), (x, y))
    assert lf.accepts_complex(0) and lf.accepts_complex(1)
    lf_plain = LeafFunction(lambda p: jax.numpy.sum(p[0] * p[1]), (x, y))
    assert lf_plain.accepts_complex(0)
    assert 0 not in lf_plain._widen and {0, 1} <= lf._widen
