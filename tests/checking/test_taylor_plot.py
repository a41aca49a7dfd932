"""The picture of a check: ``GradCheckReport.taylor`` keeps each leaf's Taylor ladder and
``report.plot()`` draws it, the fitted slope 2 for a right leaf and 1 for a wrong one."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import functional_nn as fnn
from functional_nn.checking._taylor_plot import FIT_LABEL

matplotlib.use("Agg")

X = jax.random.normal(jax.random.key(0), (8, 3))


def f(p):
    return jnp.mean(jnp.tanh(X.astype(p["w"].dtype) @ p["w"] + p["b"][None]) ** 2)


def wrong_in_b(p):  # forgets tanh'(z) in d/db; w is right
    a = jnp.tanh(X.astype(p["w"].dtype) @ p["w"] + p["b"][None])
    return {"w": jax.grad(f)(p)["w"], "b": jnp.mean(2 * a, axis=0) / 2}


def params(dtype):
    w = jax.random.normal(jax.random.key(1), (3, 2), dtype)
    return {"w": w, "b": jnp.full(2, 0.3, dtype)}


def fitted_slope(ax) -> float:
    """The slope of the panel's fitted line, read off the figure's own data."""
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(FIT_LABEL)]
    x, y = np.log10(line.get_xdata()), np.log10(line.get_ydata())
    return float((y[-1] - y[0]) / (x[-1] - x[0]))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_fitted_line_has_slope_two_for_a_right_leaf_and_one_for_a_wrong_one(dtype):
    import matplotlib.pyplot as plt

    report = fnn.check_grad(f, params(dtype), grad=wrong_in_b)
    assert {r.leaf for r in report.failures} == {"['b']"}
    fig = report.plot()
    panels = {ax.get_title().split(":")[0]: ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"['b']", "['w']"}
    assert abs(fitted_slope(panels["['w']"]) - 2) < 0.25
    assert abs(fitted_slope(panels["['b']"]) - 1) < 0.25
    assert "FAIL" in panels["['b']"].get_title() and "FAIL" not in panels["['w']"].get_title()
    red = matplotlib.colors.to_rgba("tab:red")
    assert panels["['b']"].spines["left"].get_edgecolor() == red
    assert panels["['w']"].spines["left"].get_edgecolor() != red
    guides = {ln.get_label() for ln in panels["['w']"].get_lines()}
    assert {"slope 1", "slope 2"} <= guides
    plt.close(fig)


def test_the_ladder_kept_is_the_one_the_taylor_row_read():
    report = fnn.check_grad(f, params("float64"))
    assert report.ok, str(report)
    for row in (r for r in report.rows if r.method == "taylor"):
        t = report.taylor[row.leaf]
        assert t.order == row.value and t.status == row.status
        assert np.all(np.diff(t.h) < 0) and t.h.shape == t.r.shape == t.fit.shape
        assert t.fit.sum() >= 2 and np.all(t.r[t.fit] > t.floor)
        # the fitted points are the smallest steps above the floor: none smaller is unused
        above = np.flatnonzero(t.r > t.floor)
        assert np.flatnonzero(t.fit).max() <= above.max()
    payload = json.loads(report.to_json())
    assert set(payload["taylor"]) == {"['b']", "['w']"}
    assert payload["taylor"]["['w']"]["order"] == report.taylor["['w']"].order


def test_one_axes_given_holds_every_leaf_and_the_choice_of_leaves_is_kept():
    import matplotlib.pyplot as plt

    report = fnn.check_grad(f, params("float64"), grad=wrong_in_b)
    fig, ax = plt.subplots()
    assert report.plot(leaves=["['b']"], ax=ax) is fig
    fits = [ln for ln in ax.get_lines() if ln.get_label().startswith(FIT_LABEL)]
    assert len(fits) == 1 and abs(fitted_slope(ax) - 1) < 0.25
    plt.close(fig)


def test_plot_says_what_it_lacks():
    report = fnn.check_grad(f, params("float64"), taylor=False)
    with pytest.raises(ValueError, match="keeps no Taylor ladder"):
        report.plot()
    with pytest.raises(ValueError, match=r"no Taylor ladder for \['c'\]; the report has \['b'\]"):
        fnn.check_grad(f, params("float64")).plot(leaves=["['c']"])


def test_matplotlib_is_not_imported_by_the_library_until_a_plot_is_asked_for():
    code = (
        "import sys, jax.numpy as jnp, functional_nn as fnn\n"
        "r = fnn.check_grad(lambda p: jnp.sum(p ** 2), jnp.ones(3))\n"
        "assert 'matplotlib' not in sys.modules, 'imported by the library'\n"
        "r.plot()\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    env = {"MPLBACKEND": "Agg", "PATH": ""}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
