"""Every tolerance of the test suite, per oracle and dtype, in one place."""

HAND_VS_AUTODIFF = {"float64": 1e-12, "float32": 1e-5}
"""Normwise, per leaf: backprop and jacobian_chain against jax.grad."""

DERIVATIVE_VS_GRAD = {"float64": 1e-13, "float32": 1e-6}
"""Elementwise relative: a hand-written scalar derivative against jax.grad of its function."""

COMPLEX_STEP_1D = 1e-13
"""Relative: Im f(x + ih) / h against f'(x), h = 1e-30, float64."""

COMPLEX_STEP_VS_AUTODIFF = 1e-13
"""Normwise, per leaf, float64: the complex step of the whole objective."""

LOCAL_FD_VS_AUTODIFF = 1e-7
"""Normwise, per leaf, float64: the lecture's chain of locally differenced factors."""

SYMPY_VS_HAND = 1e-12
"""Relative (normwise), float64: SymPy's lambdified closed forms against the library."""
