"""scripts/bench/compare_modes.py, the complex table of scripts/compare_checkers.py, on a few
cases without torch (seconds; the measured tables are the script's)."""

import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench import compare_modes as cm  # noqa: E402


@pytest.mark.parametrize("name", ["sum |z|^2", "z^2"])  # check_grad, check_vjp
def test_right_complex_gradient_passes_and_its_conjugate_is_caught(name):
    f, kind = cm.jax_complex_zoo()[name]
    z = jnp.asarray(cm.complex_input(0, "complex64"))
    assert cm.ours_complex(f, kind, z)
    assert not cm.ours_complex(cm.jax_complex_planted(f, kind, "conjugated", 0.05), kind, z)


def test_complex_table_counts_verdicts_per_dtype():
    zoo = {"sum |z|^2": cm.jax_complex_zoo()["sum |z|^2"]}
    tools = {"functional_nn": (cm.ours_complex, zoo, cm.jax_complex_planted)}
    (row,) = cm.complex_table(1, tools)
    for dtype in ("complex64", "complex128"):
        assert row[f"{dtype} false failures"] == 0.0
        assert row[f"{dtype} conjugated caught"] == 1.0
        assert row[f"{dtype} largest entry off caught"] == 1.0
        assert row[f"{dtype} where"]["false failures"] == {}
    assert row["cases"] == 1
