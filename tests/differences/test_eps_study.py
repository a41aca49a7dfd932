"""eps_study: its grid of steps and its schemes are checked before anything runs."""

import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import Layer, Network, eps_study

NET = Network((2, 1))
PARAMS = (Layer(jnp.ones((1, 2)), jnp.zeros(1)),)
X, Y = jnp.ones((3, 2)), jnp.ones((3, 1))


@pytest.mark.parametrize(
    "eps, error, match",
    [
        (1e-3, TypeError, r"eps must be a non-empty list or 1-d array.*got 0.001 \(float\)"),
        ([], ValueError, r"eps must be a non-empty list.*empty grid"),
        (np.array([]), ValueError, r"eps must be a non-empty list.*empty grid"),
        ([True], TypeError, r"eps\[0\] must be a real number in \(0.0, 1.0\); got True"),
        (np.array([True]), TypeError, r"eps must be .*got an array of dtype bool"),
        ([1e-4, 1e5], ValueError, r"eps\[1\] must be a real number in \(0.0, 1.0\); got 100000"),
        (np.array([1e-4, np.nan]), ValueError, r"eps must be .*; eps\[1\] is nan"),
        (np.ones((2, 2)) / 4, TypeError, r"eps must be .*shape \(2, 2\)"),
        ("1e-3", TypeError, r"eps must be a non-empty list.*\(str\)"),
    ],
)
def test_the_eps_grid_is_checked(eps, error, match):
    with pytest.raises(error, match=f"^eps_study: {match}"):
        eps_study(NET, "bce", PARAMS, X, Y, schemes=("central",), eps=eps)


@pytest.mark.parametrize(
    "schemes, error, match",
    [
        ("central", TypeError, r"schemes must be a non-empty list or tuple.*got 'central'"),
        ((), ValueError, r"schemes is empty: nothing to study"),
        (("central", "backward"), ValueError, r"unknown scheme 'backward' in schemes"),
    ],
)
def test_the_schemes_are_checked(schemes, error, match):
    with pytest.raises(error, match=f"^eps_study: {match}"):
        eps_study(NET, "bce", PARAMS, X, Y, schemes=schemes, eps=[1e-3])
