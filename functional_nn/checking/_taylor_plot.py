r"""The Taylor remainder test drawn (:meth:`~functional_nn.GradCheckReport.plot`).

Per leaf, the remainder :math:`r(h)` against the step :math:`h` on log-log axes: a right
gradient leaves :math:`r = O(h^2)`, slope 2; a wrong one :math:`r \approx |\langle \nabla f -
g, v\rangle| h`, slope 1 at small steps. Each leaf's panel shows the ladder's points (those under
the rounding floor hollow), the line fitted to the points the slope came from (its label
carries the slope), dashed slope-1 and slope-2 guides through the fit's smallest step, and the
floor. A failing leaf's panel is framed in red and its title says ``FAIL``.

matplotlib is imported here only, when a plot is asked for: ``import functional_nn`` never
loads it.
"""

from __future__ import annotations

import math

import numpy as np

FIT_LABEL = "fitted slope"
"""The label of each panel's fitted line starts with this (the tests read it back)."""


def plot_taylor(report, leaves=None, ax=None):
    """Draw ``report.taylor``; see :meth:`~functional_nn.GradCheckReport.plot`."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # an optional extra
        raise ImportError(
            'GradCheckReport.plot needs matplotlib: pip install "functional_nn[plot]"'
        ) from e
    if not report.taylor:
        raise ValueError(
            "GradCheckReport.plot: this report keeps no Taylor ladder (check_grad with "
            "taylor=True keeps one per leaf)"
        )
    paths = list(report.taylor) if leaves is None else list(leaves)
    unknown = [p for p in paths if p not in report.taylor]
    if unknown:
        raise ValueError(
            f"GradCheckReport.plot: no Taylor ladder for {', '.join(unknown)}; the report "
            f"has {', '.join(report.taylor)}"
        )
    if ax is not None:
        axes, fig = [ax] * len(paths), ax.figure
    else:
        cols = min(3, len(paths))
        rows = math.ceil(len(paths) / cols)
        fig, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[len(paths) :]:
            extra.set_visible(False)
    for path, a in zip(paths, axes, strict=False):
        _panel(a, path, report.taylor[path], one_leaf=ax is None or len(paths) == 1)
    if ax is None:
        fig.suptitle(f"Taylor remainder test against {report.reference!r}", fontsize=10)
        fig.tight_layout()
    return fig


def _panel(ax, path, t, one_leaf):
    h, r = np.asarray(t.h, float), np.asarray(t.r, float)
    shown = r > 0
    above = shown & (r > t.floor)
    failed = t.status == "fail"
    color = "tab:red" if failed else "tab:blue"
    name = "" if one_leaf else f"{path}: "
    ax.loglog(h[above], r[above], "o", color=color, ms=4, label=f"{name}remainder")
    ax.loglog(h[shown & ~above], r[shown & ~above], "o", mfc="none", color=color, ms=4,
              label=f"{name}under the rounding floor")  # fmt: skip
    if t.fit.sum() >= 2:
        hf, rf = h[t.fit], r[t.fit]
        slope, icpt = np.polyfit(np.log10(hf), np.log10(rf), 1)
        xs = np.array([hf.min(), hf.max()])
        ax.loglog(xs, 10**icpt * xs**slope, "-", color=color, lw=2,
                  label=f"{FIT_LABEL} {slope:.2f}")  # fmt: skip
        h0, r0 = hf.min(), 10**icpt * hf.min() ** slope
        grid = np.array([h0, h.max()])
        for order, style in ((1, ":"), (2, "--")):
            ax.loglog(grid, r0 * (grid / h0) ** order, style, color="0.45", lw=1,
                      label=f"slope {order}")  # fmt: skip
    ax.axhline(t.floor, color="0.7", lw=1, label="rounding floor")
    if shown.any():  # the data's range, not the guides'
        ax.set_ylim(min(r[shown].min(), t.floor) / 10, r[shown].max() * 10)
    verdict = "FAIL" if failed else t.status
    ax.set_title(f"{path}: order {t.order:.2f}, {verdict}", fontsize=9,
                 color="tab:red" if failed else "black")  # fmt: skip
    if failed:
        for spine in ax.spines.values():
            spine.set_edgecolor("tab:red")
            spine.set_linewidth(1.5)
    ax.set_xlabel("step h")
    ax.set_ylabel("remainder r(h)")
    ax.legend(fontsize=7, loc="lower right")
