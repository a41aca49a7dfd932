"""Datasets: shapes, determinism, standardization with training statistics only."""

import sys

import jax
import numpy as np
import pytest

from functional_nn import DATASETS, load_dataset

SHAPES = {
    "breast_cancer": (30, 1, 569),
    "diabetes": (10, 1, 442),
    "digits": (64, 10, 1797),
    "xor": (2, 1, 400),
    "moons": (2, 1, 400),
    "circles": (2, 1, 400),
    "curve": (1, 1, 400),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_shapes_split_and_standardization(name):
    ds = load_dataset(name)
    D, O, N = SHAPES[name]
    assert ds.x_train.shape[1] == ds.x_test.shape[1] == D
    assert ds.y_train.shape[1] == ds.y_test.shape[1] == O
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == N
    assert ds.x_test.shape[0] == round(0.2 * N)
    np.testing.assert_allclose(np.mean(ds.x_train, axis=0), 0, atol=1e-10)
    std = np.std(ds.x_train, axis=0)
    np.testing.assert_allclose(std[std > 0], 1, rtol=1e-10)
    assert abs(float(np.mean(ds.x_test))) > 1e-6  # test statistics were not used
    if DATASETS[name] == "binary":
        assert set(np.unique(ds.y_train)) == {0.0, 1.0}
    if DATASETS[name] == "multiclass":
        np.testing.assert_array_equal(np.sum(ds.y_train, axis=1), 1)


def test_same_key_same_arrays_other_key_other_split():
    a, b = load_dataset("moons"), load_dataset("moons", jax.random.key(0))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    c = load_dataset("moons", jax.random.key(1))
    assert not np.array_equal(a.x_train, c.x_train)
    d, e = load_dataset("breast_cancer"), load_dataset("breast_cancer", jax.random.key(3))
    assert not np.array_equal(d.y_test, e.y_test)  # another split of the same data


def test_unknown_dataset_is_named():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*'breast_cancer'"):
        load_dataset("mnist")


def test_missing_scikit_learn_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_dataset("digits")
    load_dataset("xor")  # synthetic ones need nothing


@pytest.mark.parametrize("key", [0, "0", jax.numpy.zeros(3, "uint32")])
def test_a_key_that_is_not_a_prng_key_is_named(key):
    with pytest.raises(TypeError, match=r"key must be a JAX PRNG key such as jax.random.key\(0\)"):
        load_dataset("xor", key)


def test_a_raw_prng_key_is_welcome():
    a, b = load_dataset("xor", jax.random.PRNGKey(3)), load_dataset("xor", jax.random.key(3))
    assert a.x_train.shape == b.x_train.shape


def test_a_name_that_is_not_a_string_is_refused():
    with pytest.raises(ValueError, match=r"unknown dataset \['xor'\]"):
        load_dataset(["xor"])
