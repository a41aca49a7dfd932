"""The features table of scripts/compare_checkers.py: what each checker does, in words."""

FEATURES = [
    ("verdict per leaf, naming the leaf", "yes", "no (one direction, all leaves)", "per input"),
    ("step chosen from the dtype", "yes (u^(1/5), ladder)", "no (1e-4 fixed)", "no (1e-6)"),
    ("complex step, validated", "yes", "no", "no"),
    ("complex parameters", "yes: real pairs (Re, Im), JAX's convention, central differences",
     "complex inputs, one direction", "Wirtinger (gradcheck)"),
    ("reference's own error bar in the test", "yes (Richardson)", "no", "no"),
    ("Taylor remainder order, no step size", "yes", "no", "no"),
    ("custom_vjp at top level checked exactly", "yes (primal autodiff)", "modes=['rev']",
     "n/a"),
    ("VJP: dot product, zero, vmap", "yes", "rev only", "full Jacobian"),
    ("JVP (forward mode): per leaf, linearity, zero, vmap, transpose", "check_jvp",
     "modes=['fwd'] (one direction)", "check_forward_ad"),
    ("non-array leaves (a function, a key, an int) held", "yes, named", "no", "n/a"),
    ("second order", "order=2 (HVP)", "order=2", "gradgradcheck"),
    ("kinks (pattern=)", "yes", "no", "no"),
    ("float32 without false failures", "yes", "mostly", "no (use float64)"),
    ("bfloat16, float16, mixed precision: against the program in float64",
     "yes (promote; rounding yardstick; baseline=)", "no", "no"),
]  # fmt: skip
