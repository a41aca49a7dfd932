"""The readable record: every derivation in LaTeX, beside its slide and the library function
it checks. ``scripts/derive.py`` writes it to ``derivations/DERIVATIONS.md``; a test checks
that the committed file is what :func:`render` produces."""

from __future__ import annotations

import sympy as sp

from derivations import activations, chain_rule, collapse, library_forms, logistic, losses, networks

__all__ = ["TABLES", "render"]

TABLES = "## Their accuracy in ULPs"
"""The heading of the measured section: what precedes it is exact (``derive.py --check``)."""


def _tex(e) -> str:
    return sp.latex(e, mat_delim="(")


def _identity_rows(identities) -> list[str]:
    lines = []
    for i in identities:
        proved = "proved (the difference simplifies to 0)" if activations.prove(i) else "NOT PROVED"
        lines += [
            f"### {i.name}",
            "",
            f"Slide: *{i.slide}*. Checks: `{i.checks}`. {proved}.",
            "",
            "$$",
            f"{_tex(i.lhs)} = {_tex(i.rhs)}",
            "$$",
            "",
        ]
    return lines


def render(tables: bool = True) -> str:
    """The whole record as Markdown with LaTeX that GitHub renders; without ``tables``, the
    exact part alone (everything before :data:`TABLES`)."""
    out = [
        "# Derivations",
        "",
        "Written by `python scripts/derive.py` from the modules of `derivations/`; do not edit.",
        "Each identity is derived by SymPy (left) and compared with the closed form that",
        "`functional_nn` writes by hand (right); *proved* means the difference simplifies to",
        "exactly 0, not that it was sampled.",
        "",
        "## Activations",
        "",
        *_identity_rows(activations.IDENTITIES),
        "## Losses",
        "",
        *_identity_rows(losses.IDENTITIES),
        "## Logistic regression",
        "",
        "Slide: *Logistic regression*, *Training a deep neural net*. Checks:",
        "`functional_nn.backprop` on `Network((D, 1))`.",
        "",
    ]
    for D in (1, 2, 3):
        derived, closed = logistic.logistic_regression_gradient(D, 3)
        ok = logistic.prove_logistic_regression(D, 3)
        out += [
            f"D = {D}, N = 3: {'proved' if ok else 'NOT PROVED'}.",
            "",
            "$$",
            rf"\frac{{\partial J}}{{\partial w}} = {_tex(closed)}",
            "$$",
            "",
        ]
    c = chain_rule.chain_rule()
    out += [
        "## The vector chain rule",
        "",
        "Slide: *Chain rule of derivatives* (vector version). Generic f: R^2 -> R^3 and",
        f"g: R^3 -> R^2; {'proved' if c.holds else 'NOT PROVED'}: the Jacobian of g o f, of",
        f"shape {c.lhs.shape}, equals the product of shapes {c.dz_dy.shape} and {c.dy_dx.shape}.",
        "",
        "$$",
        rf"\frac{{\partial z}}{{\partial x}} = {_tex(c.lhs)}",
        "$$",
        "",
    ]
    k = collapse.collapse()
    out += [
        "## The linear collapse",
        "",
        "Slide: *Activation function* (without one).",
        "Checks: `functional_nn.equivalent_linear_map`.",
        f"For sizes 3-4-3-2 with biases and identity activations, "
        f"{'proved' if k.holds else 'NOT PROVED'}: the network equals",
        "",
        "$$",
        r"\hat y = W^{(3)} W^{(2)} W^{(1)} x + W^{(3)} W^{(2)} b^{(1)} + W^{(3)} b^{(2)} + b^{(3)}",
        "$$",
        "",
    ]
    net = networks.symbolic_network((4, 3, 2))
    delta_ok = networks.prove_delta_rule(net)
    out += [
        "## The lecture's network, D = 4, H = 3, O = 2 (no bias, sigmoid, BCE)",
        "",
        "Slides: *Application to deep learning*, *Gradient of W(2)*, *Gradient of W(1)*.",
        "Checks: `functional_nn.jacobian_factors`, `jacobian_chain`, `backprop`, and through",
        "`derivations.sympy_gradient` every method of `scripts/validate.py`.",
        "",
        f"P = {len(net.params)} parameters. The loss of one sample, from the logits:",
        "",
        "$$",
        f"J = {_tex(net.J)}",
        "$$",
        "",
        "The factors of the chain (the output sigmoid folded into the loss), with their shapes:",
        "",
        "| factor | shape |",
        "|---|---|",
        *[f"| {name} | {m.shape} |" for name, m in net.factors.items()],
        "",
        "$$",
        rf"\frac{{\partial J}}{{\partial z^{{(2)}}}} = {_tex(net.factors['dJ/dz(2)'])}, \quad "
        rf"\frac{{\partial z^{{(2)}}}}{{\partial h^{{(1)}}}} = {_tex(net.factors['dz(2)/dh(1)'])}",
        "$$",
        "",
        "One entry of the gradient, derived directly:",
        "",
        "$$",
        rf"\frac{{\partial J}}{{\partial {_tex(net.params[0])}}} = {_tex(net.grad[0])}",
        "$$",
        "",
        "The delta rule, `delta(2) = sigma(z(2)) - y`, `dJ/dW(l) = delta(l) h(l-1)^T`,",
        "`delta(1) = (W(2)^T delta(2)) * sigma'(z(1))`, equals the direct derivative in all",
        f"{len(net.params)} entries: {'proved' if delta_ok else 'NOT PROVED'}.",
        "",
    ]
    out += _read_rows()
    return "\n".join(out + (_ulp_rows() if tables else []))


def _read_rows() -> list[str]:
    """The lecture's functions read from the library's code, proved per branch; ULP tables."""
    out = [
        "## Read from the library's code",
        "",
        "`fnn.symbolic` reads each function's JAX program into a closed form (the stable forms'",
        "branches as `Piecewise`); each branch minus the hand-written form simplifies to 0",
        "(`derivations/library_forms.py`; a branch decided by a label `y = c` takes the",
        "hand-written form at `y = c` too).",
        "",
    ]
    for form in library_forms.READ:
        proofs = library_forms.prove(form)
        said = ", ".join(f"{_tex(c)}: {'proved' if d == 0 else 'NOT PROVED'}" for c, d in proofs)
        out += [
            f"### {form.name}",
            "",
            f"Read from `{form.checks}`. Branches: {said}.",
            "",
            "$$",
            f"{_tex(form.read)} = {_tex(form.hand)}",
            "$$",
            "",
        ]
    return out


def _ulp_rows() -> list[str]:
    """check_symbolic's tables: measured, so their last digits depend on the JAX build."""
    import jax

    out = [
        TABLES,
        "",
        f"Measured with jax {jax.__version__} on {jax.default_backend()}; the last digits move",
        "between JAX versions and XLA builds, so `derive.py --check` compares everything above",
        "this section exactly and these tables by their ranges and verdicts.",
        "",
        "`fnn.check_symbolic` of each as a function of one real (value and `jax.grad`), in float32",
        "and float64, against the exact derivatives of the closed form read from its program",
        "(mpmath at 50 digits and more; docs/symbolic.md says how points, ranges and the bar are",
        "chosen).",
        "",
    ]
    for (name, dtype), report in library_forms.ulp_reports().items():
        out += [f"### {name}, {dtype}", "", "```", str(report), "```", ""]
    return out
