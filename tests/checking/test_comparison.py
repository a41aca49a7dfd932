"""Per-leaf comparison and the report: the errors against a NumPy oracle, exclusion and scale,
the verdict of a row, and the report as a table, as data and as an exception."""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from functional_nn.checking._comparison import (
    CheckRow,
    GradCheckReport,
    GradientMismatch,
    compare_gradients,
    compare_leaf,
    leaf_paths,
    leaf_row,
    row_within,
)

FINITE = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)


def _pair(shape):
    return st.tuples(hnp.arrays(np.float64, shape, elements=FINITE),
                     hnp.arrays(np.float64, shape, elements=FINITE))  # fmt: skip


# -- compare_leaf -------------------------------------------------------------------------------


@given(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4).flatmap(_pair))
def test_compare_leaf_matches_the_definitions_computed_with_numpy(ab):
    a, b = ab
    c = compare_leaf("x", a, b)
    diff = np.abs(a - b)
    scale = max(np.abs(a).max(), np.abs(b).max())
    assert c.path == "x" and c.shape == a.shape
    assert c.max_abs == diff.max()
    if diff.max() == 0:
        assert c.normwise == 0.0 and c.max_rel == 0.0
    else:
        assert c.normwise == pytest.approx(diff.max() / scale, rel=1e-12)
        denom = np.maximum(np.abs(a), np.abs(b))
        rel = np.where(denom > 0, diff / np.where(denom > 0, denom, 1), 0.0)
        assert c.max_rel == pytest.approx(rel.max(), rel=1e-12)
        # the index is where the worst relative error is, and the values are the entries there
        assert rel[c.index] == rel.max()
        assert (c.a_value, c.b_value) == (a[c.index], b[c.index])
    assert c.normwise <= c.max_rel + 1e-15  # normwise never exceeds the worst entry's error


def test_both_zero_is_no_error_and_one_zero_is_all_error():
    zeros, ones = np.zeros(3), np.ones(3)
    assert compare_leaf("x", zeros, zeros).normwise == 0.0
    assert compare_leaf("x", zeros, ones).normwise == 1.0
    assert compare_leaf("x", 2 * ones, zeros).normwise == 1.0
    assert compare_leaf("x", ones, zeros).max_rel == 1.0


def test_excluded_entries_leave_the_errors_but_the_reference_still_sets_the_scale():
    a, b, kink = np.array([1.01, 1e6]), np.array([1.0, 50.0]), np.array([False, True])
    c = compare_leaf("x", a, b, exclude=kink)
    assert c.max_abs == pytest.approx(0.01)
    assert c.normwise == pytest.approx(0.01 / 50)  # |b| at the kink counts, |a| there does not
    assert c.index == (0,)
    everything = compare_leaf("x", a, b, exclude=np.array([True, True]))
    assert (everything.normwise, everything.max_abs, everything.index) == (0.0, 0.0, ())


def test_a_given_scale_replaces_the_leafs_own_magnitude():
    c = compare_leaf("x", np.array([1.0, 2.0]), np.array([1.0, 2.5]), scale=100.0)
    assert c.normwise == pytest.approx(0.5 / 100)


def test_empty_leaves_compare_equal_and_non_finite_entries_are_the_worst_error():
    assert compare_leaf("x", np.zeros((0, 3)), np.zeros((0, 3))).normwise == 0.0
    c = compare_leaf("x", np.array([1.0, np.inf, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert c.normwise == np.inf and c.index == (1,)


def test_complex_leaves_are_compared_by_modulus():
    c = compare_leaf("z", np.array([1 + 1j, 0.5]), np.array([1.0, 0.5]))
    assert c.max_abs == pytest.approx(1.0)
    assert c.normwise == pytest.approx(1 / np.sqrt(2))  # the largest entry is |1 + 1j|
    assert c.a_value == 1 + 1j and c.index == (0,)


# -- compare_gradients --------------------------------------------------------------------------


def test_scale_gradient_measures_every_leaf_against_the_whole_reference():
    ref = {"big": np.array([100.0]), "small": np.array([1e-3, 2e-3])}
    got = {"big": np.array([100.0]), "small": np.array([1e-3, 2.1e-3])}
    per_leaf = {c.path: c.normwise for c in compare_gradients(got, ref)}
    whole = {c.path: c.normwise for c in compare_gradients(got, ref, scale="gradient")}
    assert per_leaf["['small']"] == pytest.approx(1e-4 / 2.1e-3)
    assert whole["['small']"] == pytest.approx(1e-4 / 100)
    assert per_leaf["['big']"] == whole["['big']"] == 0.0


def test_compare_gradients_masks_and_scale_are_checked():
    a = {"w": np.ones(2), "b": np.ones(1)}
    b = {"w": np.array([1.0, 3.0]), "b": np.ones(1)}
    (cb, cw) = compare_gradients(a, b, exclude={"w": np.array([False, True]), "b": np.zeros(1)})
    assert (cb.path, cw.path) == ("['b']", "['w']")
    assert cw.normwise == 0.0  # the only differing entry is excluded
    with pytest.raises(TypeError, match="exclude must have the structure of a"):
        compare_gradients(a, b, exclude={"w": np.zeros(2, bool)})
    with pytest.raises(ValueError, match=r"scale must be 'leaf' or 'gradient'; got 'global'"):
        compare_gradients(a, b, scale="global")


# -- rows ---------------------------------------------------------------------------------------


def _comparison(normwise):
    return compare_leaf("['w']", np.array([1.0 + normwise]), np.array([1.0]))._replace(
        normwise=normwise
    )


def test_leaf_row_fails_above_the_bar_and_on_nan_and_reports_kinks_only_when_it_passes():
    tol = 1e-6
    assert leaf_row("m", _comparison(tol), tol).status == "pass"  # at the bar: passes
    assert leaf_row("m", _comparison(2 * tol), tol).status == "fail"
    assert leaf_row("m", _comparison(np.nan), tol).status == "fail"
    assert leaf_row("m", _comparison(0.0), tol, kinks=2).status == "kink"
    assert leaf_row("m", _comparison(1.0), tol, kinks=2).status == "fail"
    row = leaf_row("m", _comparison(0.5), tol, kinks=0, evaluations=7, seconds=0.25)
    assert (row.method, row.leaf, row.shape, row.error, row.tolerance) == ("m", "['w']", (1,),
                                                                           0.5, tol)  # fmt: skip
    assert (row.value, row.reference_value, row.evaluations, row.seconds) == (1.5, 1.0, 7, 0.25)


def test_row_within_counts_only_the_error_beyond_the_references_own_bar():
    a, ref = np.array([2.0, -4.0]), np.array([2.0 + 1e-3, -4.0])
    inside = row_within("m", "['w']", a, ref, err=2e-3, tol=1e-12)
    assert inside.status == "pass" and inside.error == 0.0
    assert inside.max_abs == pytest.approx(1e-3)  # the raw error is still reported
    outside = row_within("m", "['w']", a, ref, err=np.array([4e-4, 0.0]), tol=1e-12)
    assert outside.status == "fail"
    assert outside.error == pytest.approx((1e-3 - 4e-4) / 4.0)
    exact = row_within("m", "['w']", a, ref, err=0.0, tol=1.0)
    assert exact.error == pytest.approx(1e-3 / 4.0)


def test_row_within_leaves_out_kinks_and_reports_the_shape_asked_for():
    a, ref = np.array([1.0, 5.0, 2.0]), np.array([1.0, 0.0, 2.0])
    row = row_within("m", "p", a, ref, 0.0, 1e-12, exclude=np.array([False, True, False]),
                     shape=(3, 1))  # fmt: skip
    assert (row.status, row.kinks, row.error, row.shape) == ("kink", 1, 0.0, (3, 1))
    assert row_within("m", "p", a, ref, 0.0, 1e-12).status == "fail"


# -- the report ---------------------------------------------------------------------------------


def _row(method, leaf, error, tol=1e-6, value=1.0, status=None):
    status = status or ("pass" if error <= tol else "fail")
    return CheckRow(method, leaf, (2,), error, error, error, (1,), value, 1.0, tol, status, 0, 3,
                    0.001)  # fmt: skip


def _report(*rows):
    return GradCheckReport(list(rows), "central", "a tiny test", "float64")


def test_the_verdict_fails_on_any_failed_row_and_a_kink_is_no_failure():
    good = _report(_row("grad", "['w']", 1e-9), _row("grad", "['b']", 0.0, status="kink"))
    assert good.ok and good.failures == []
    assert good.raise_if_failed() is good
    bad = _report(_row("grad", "['w']", 1e-9), _row("grad", "['b']", 0.1))
    assert not bad.ok and [r.leaf for r in bad.failures] == ["['b']"]
    with pytest.raises(GradientMismatch, match=r"gradients disagree \(grad \['b'\]\)") as info:
        bad.raise_if_failed()
    assert isinstance(info.value, AssertionError)
    assert str(bad) in str(info.value)  # the exception carries the whole table


def test_the_table_names_the_reference_every_row_and_the_verdict():
    report = _report(_row("grad", "['w']", 1.23e-9), _row("hvp", "['b']", 0.5, value=0.75))
    lines = str(report).splitlines()
    assert lines[0] == "gradient check against 'central': a tiny test"
    assert lines[1].split()[:4] == ["method", "leaf", "error", "tol"]
    assert lines[2].split()[:3] == ["grad", "['w']", "1.23e-09"]
    assert "0.75 vs 1" in lines[3] and lines[3].endswith("fail")
    assert lines[-1] == "1 FAILED"
    assert str(_report(_row("grad", "['w']", 0.0))).splitlines()[-1] == "OK"


def test_worst_is_per_method_the_largest_error_over_its_bar():
    rows = [_row("grad", "a", 1e-7, tol=1e-6), _row("grad", "b", 1e-4, tol=1e-2),
            _row("hvp", "a", 1e-9)]  # fmt: skip
    worst = _report(*rows).worst()
    assert worst["grad"].leaf == "a" and worst["hvp"].leaf == "a"  # 0.1 beats 0.01


def test_to_json_is_the_rows_as_data_with_complex_values_as_pairs():
    report = _report(_row("grad", "['w']", 0.0, value=1 + 2j))
    data = json.loads(report.to_json())
    assert (data["reference"], data["description"], data["dtype"], data["ok"]) == (
        "central", "a tiny test", "float64", True
    )  # fmt: skip
    (row,) = data["rows"]
    assert row["value"] == [1.0, 2.0] and row["shape"] == [2] and row["index"] == [1]


def test_leaf_paths_are_keystrs_in_tree_order_and_root_for_one_array():
    tree = {"w": np.ones(2), "b": (np.ones(1), [np.ones(3)])}
    assert leaf_paths(tree) == ["['b'][0]", "['b'][1][0]", "['w']"]
    assert leaf_paths(np.ones(3)) == ["(root)"]
    assert leaf_paths({}) == []
