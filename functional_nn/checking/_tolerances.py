"""The bars every check is held to: one table, by dtype, and the size above which checks
draw random directions instead of differencing every entry."""

from __future__ import annotations

TOLERANCES = {
    "float64": {
        # check_gradients: each method against the reference method, on the same network
        "jacobian_chain": 1e-12,
        "backprop": 1e-12,
        "autodiff": 1e-12,
        "sympy": 1e-12,
        "complex_step": 1e-13,
        "finite_differences": 1e-7,
        "local_finite_differences": 1e-7,
        "directional": 1e-6,
        "J": 1e-12,
        # check_grad and check_vjp: a derivative against the reference the engine found
        "reference:autodiff": 1e-10,
        "reference:complex_step": 1e-10,
        "reference:central": 1e-6,
        "vmap": 1e-12,
    },
    "float32": {
        "jacobian_chain": 1e-5,
        "backprop": 1e-5,
        "autodiff": 1e-5,
        "sympy": 1e-5,
        "complex_step": 1e-5,
        "finite_differences": 1e-2,
        "local_finite_differences": 1e-2,
        "directional": 1e-2,
        "J": 1e-5,
        "reference:autodiff": 1e-4,
        "reference:complex_step": 1e-4,
        "reference:central": 1e-3,
        "vmap": 1e-5,
    },
}
"""Normwise bars per dtype (docs/checking.md, "References and tolerances"), in two groups.

:func:`~functional_nn.check_gradients` holds each gradient method to the bar of its name: a
method of another name gets the bar of the hand-written methods (``backprop``) unless
``check_gradients(tolerances=...)`` says more. Finite differences (central, away from kinks),
the local chain and the directional check have the bars their truncation and rounding errors
allow; ``"J"`` bars the loss value itself.

:func:`~functional_nn.check_grad` and :func:`~functional_nn.check_vjp` hold a derivative to the
bar of the reference it is compared with (``"reference:NAME"``, :func:`reference_bars`),
applied to each leaf after the reference's own error bar (zero for autodiff and the complex
step) is subtracted entry by entry (:func:`~functional_nn.checking._comparison.row_within`);
``"vmap"`` bars a batched VJP against the loop. Each is 1e4 times or more below a 1% (float64) or 5%
(float32) error in a leaf's largest entry, and 100 times or more above the rounding of a right
derivative."""

FULL_JACOBIAN_UP_TO = 1_000_000
"""Entries of :math:`J` (outputs times primal entries) up to which ``check_vjp`` and
``check_jvp`` compare every entry (the VJP's rows, ``J v`` along unit tangents); beyond, the
dot-product test alone (``check_vjp``), random tangents (``check_jvp``)."""

DIRECTIONAL_ABOVE = 10_000
"""Above this many parameters, :func:`~functional_nn.check_gradients` replaces the
finite-difference methods (2P evaluations and more) by the directional check (2k
evaluations), and :func:`~functional_nn.check_grad` and :func:`~functional_nn.check_vjp` draw
random directions per leaf instead of differencing every entry."""

FINITE_DIFFERENCE_METHODS = ("finite_differences", "complex_step", "local_finite_differences")

GRADIENT_SCALED = ("finite_differences",)
"""Methods whose error is measured against the whole gradient's largest entry, not each
leaf's. A difference quotient of J has an absolute rounding error of about ``u |J| / h`` in
every entry alike, so a leaf whose gradient is small beside the rest (the first layers of a
deep sigmoid network, 1e-4 of the last in the validation suite) cannot meet a per-leaf
relative bar however right it is: there, central differences reach 3e-8 relative at best,
at a step 50 times the default. The complex step subtracts nothing and the local chain
differences O(1) layer functions, so both keep the per-leaf bar."""

_PREFIX = "reference:"


def reference_bars(dtype: str) -> dict[str, float]:
    """The bars of :func:`~functional_nn.check_grad` and :func:`~functional_nn.check_vjp` for
    ``dtype`` (``"float32"`` or ``"float64"``), by reference name (``"autodiff"``,
    ``"complex_step"``, ``"central"``) and ``"vmap"``."""
    table = TOLERANCES[dtype]
    bars = {name[len(_PREFIX) :]: bar for name, bar in table.items() if name.startswith(_PREFIX)}
    return {**bars, "vmap": table["vmap"]}


def bar_name(reference: str) -> str:
    """The entry of :func:`reference_bars` that bars ``reference``: every exact derivative of
    autodiff (``"autodiff"``, ``"autodiff (custom primal)"``, ...) shares the autodiff bar."""
    return "autodiff" if reference.startswith("autodiff") else reference
