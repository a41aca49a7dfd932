"""Datasets: three that ship inside scikit-learn, four generated from a key.

Every dataset comes as ``Dataset(x_train, y_train, x_test, y_test)``: a deterministic split
(80 / 20, the same for the same ``key``), ``x`` standardized with the training set's mean and
standard deviation only, ``y`` shaped for the network: a column ``(N, 1)`` for binary labels
and regression targets, one-hot ``(N, C)`` for classes. Arrays follow JAX's default float
dtype (float64 where x64 is on).

==============  ===========  ========  =====================================================
name            task         D -> O    source
==============  ===========  ========  =====================================================
breast_cancer   binary       30 -> 1   scikit-learn (569 samples, shipped with the package)
diabetes        regression   10 -> 1   scikit-learn (442 samples; targets in their units)
digits          multi-class  64 -> 10  scikit-learn (1797 8x8 images)
xor             binary        2 -> 1   four Gaussian blobs, label x1 x2 < 0 (400 samples)
moons           binary        2 -> 1   two interleaved half circles, noise 0.1 (400)
circles         binary        2 -> 1   two concentric circles, radii 1 and 0.5, noise 0.08 (400)
curve           regression    1 -> 1   y = sin(2x) + x/2 + noise 0.1 on [-3, 3] (400)
==============  ===========  ========  =====================================================

scikit-learn is imported only when one of its datasets is asked for.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_nn._util._validation import check_key

DATASETS = {
    "breast_cancer": "binary",
    "diabetes": "regression",
    "digits": "multiclass",
    "xor": "binary",
    "moons": "binary",
    "circles": "binary",
    "curve": "regression",
}
"""Every dataset by name, with its task: ``binary``, ``multiclass`` or ``regression``."""

SHAPES = {
    "breast_cancer": (30, 1),
    "diabetes": (10, 1),
    "digits": (64, 10),
    "xor": (2, 1),
    "moons": (2, 1),
    "circles": (2, 1),
    "curve": (1, 1),
}
"""``(D, O)`` of every dataset: what a network for it takes in and puts out."""

TEST_FRACTION = 0.2


class Dataset(NamedTuple):
    """A train/test split, ``x`` standardized with the training statistics."""

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array


def _sklearn(name: str):
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(
            f"load_dataset({name!r}) needs scikit-learn, which ships that dataset: "
            "pip install scikit-learn (or pip install 'functional_nn[scripts]')"
        ) from None
    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
        "digits": datasets.load_digits,
    }[name]
    data = loader()
    return np.asarray(data.data, np.float64), np.asarray(data.target)


def _synthetic(name: str, key: jax.Array, n: int = 400):
    k1, k2, k3 = jax.random.split(key, 3)
    if name == "xor":
        centers = jnp.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
        which = jax.random.randint(k1, (n,), 0, 4)
        x = centers[which] + 0.35 * jax.random.normal(k2, (n, 2))
        y = (x[:, 0] * x[:, 1] < 0).astype(jnp.float32)
    elif name == "moons":
        label = jax.random.bernoulli(k1, 0.5, (n,))
        t = jax.random.uniform(k2, (n,), minval=0.0, maxval=math.pi)
        upper = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
        lower = jnp.stack([1 - jnp.cos(t), 0.5 - jnp.sin(t)], axis=1)
        x = jnp.where(label[:, None], lower, upper) + 0.1 * jax.random.normal(k3, (n, 2))
        y = label.astype(jnp.float32)
    elif name == "circles":
        label = jax.random.bernoulli(k1, 0.5, (n,))
        t = jax.random.uniform(k2, (n,), minval=0.0, maxval=2 * math.pi)
        r = jnp.where(label, 0.5, 1.0)
        x = r[:, None] * jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
        x = x + 0.08 * jax.random.normal(k3, (n, 2))
        y = label.astype(jnp.float32)
    else:  # curve
        x = jax.random.uniform(k1, (n, 1), minval=-3.0, maxval=3.0)
        y = jnp.sin(2 * x[:, 0]) + x[:, 0] / 2 + 0.1 * jax.random.normal(k2, (n,))
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def load_dataset(name: str, key: jax.Array | None = None) -> Dataset:
    """Load (or generate) a dataset, split and standardized.

    Args:
        name: one of :data:`DATASETS`.
        key: PRNG key of the split and of a synthetic dataset's samples; default
            ``jax.random.key(0)``. The same key gives the same arrays.

    Returns:
        :class:`Dataset` with ``y`` as a column ``(N, 1)`` (binary, regression) or one-hot
        ``(N, 10)`` (digits).

    Raises:
        ValueError: for an unknown name. ImportError: scikit-learn is missing for one of its
        datasets (the message says how to install it).

    >>> ds = load_dataset("xor")
    >>> ds.x_train.shape, ds.y_train.shape, ds.x_test.shape
    ((320, 2), (320, 1), (80, 2))
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(
            f"load_dataset: unknown dataset {name!r}; expected one of {list(DATASETS)}"
        )
    key = jax.random.key(0) if key is None else key
    check_key(key, "key", "load_dataset")
    k_data, k_split = jax.random.split(key)
    x, y = (
        _sklearn(name)
        if name in ("breast_cancer", "diabetes", "digits")
        else _synthetic(name, k_data)
    )
    if DATASETS[name] == "multiclass":
        classes = int(y.max()) + 1
        y = np.eye(classes)[y.astype(int)]
    else:
        y = y.reshape(-1, 1)
    n = x.shape[0]
    perm = np.asarray(jax.random.permutation(k_split, n))
    n_test = int(round(TEST_FRACTION * n))
    test, train = perm[:n_test], perm[n_test:]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    dtype = jnp.zeros(()).dtype

    def standardized(a):
        return jnp.asarray((a - mean) / std, dtype)

    return Dataset(
        standardized(x[train]),
        jnp.asarray(y[train], dtype),
        standardized(x[test]),
        jnp.asarray(y[test], dtype),
    )
