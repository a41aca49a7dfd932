"""Checkpoints round-trip exactly, refuse what does not fit, and are written atomically."""

import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from functional_nn import Layer, Network, load, save
from functional_nn.data import _checkpoints as checkpoint_module


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("bias", [False, True])
def test_round_trip_is_exact(tmp_path, dtype, bias, key):
    net = Network((5, 4, 3), hidden="relu", output="softmax", bias=bias)
    params = net.init(key, dtype)
    if bias:
        params = tuple(Layer(W, b + 0.5) for W, b in params)
    path = save(tmp_path / "model.npz", net, params)
    net2, params2 = load(path)
    assert net2 == net
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params2),
                    strict=True):  # fmt: skip
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]  # no temporary left


def test_truncated_file_is_refused(tmp_path, key):
    net = Network((4, 3, 2))
    path = save(tmp_path / "m.npz", net, net.init(key))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not a readable .npz checkpoint"):
        load(path)


def test_file_of_another_format_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", W1=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="is not a functional_nn/1 checkpoint"):
        load(tmp_path / "other.npz")


def test_arrays_that_do_not_fit_the_architecture_are_refused(tmp_path, key):
    net = Network((4, 3, 2))
    params = net.init(key)
    path = save(tmp_path / "m.npz", net, params)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["W2"] = np.zeros((3, 3))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"W\(2\)\) has shape \(3, 3\), expected \(2, 3\)"):
        load(tmp_path / "bad.npz")
    del arrays["W2"]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(ValueError, match="has no W2 but its network has 2 layers"):
        load(tmp_path / "short.npz")
    with pytest.raises(ValueError, match="save: params has 2 layers but the network has 1"):
        save(tmp_path / "x.npz", Network((4, 2)), params)


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, key, monkeypatch):
    """A save killed before the rename leaves the previous checkpoint intact."""
    net = Network((4, 3, 2))
    old = net.init(key)
    path = save(tmp_path / "m.npz", net, old)
    new = net.init(jax.random.key(7))

    def crash(*args):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save(path, net, new)
    monkeypatch.undo()
    _, loaded = load(path)
    np.testing.assert_array_equal(loaded[0].W, old[0].W)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
    assert checkpoint_module.FORMAT == "functional_nn/1"


def test_loaded_network_runs(tmp_path, key):
    net = Network((3, 2), output="identity", bias=False)
    params = net.init(key)
    net2, params2 = load(save(tmp_path / "m.npz", net, params))
    x = jnp.ones((2, 3))
    np.testing.assert_array_equal(net2.apply(params2, x), net.apply(params, x))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([["a", "b", "c", "d"]] * 3), "dtype <U1"),
        (np.full((3, 4), None, object), "dtype object"),
        (jnp.ones((3, 4), jnp.int32), "dtype int32"),
        (jnp.ones((3, 4)).at[1, 2].set(jnp.nan), r"params\[0\].W has 1 non-finite entries"),
    ],
)
def test_params_that_load_could_not_read_are_refused_before_the_file_is_touched(
    tmp_path, bad, match, key
):
    net = Network((4, 3, 2))
    params = net.init(key)
    path = save(tmp_path / "model.npz", net, params)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=match):
        save(path, net, (params[0]._replace(W=bad), params[1]))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_a_missing_folder_is_refused_before_any_write(tmp_path, key):
    net = Network((4, 2))
    with pytest.raises(ValueError, match="the folder .*nope of .*model.npz does not exist"):
        save(tmp_path / "nope" / "model.npz", net, net.init(key))


def test_permissions_follow_the_umask_and_a_replaced_file_keeps_its_own(tmp_path, key):
    net = Network((4, 2))
    params = net.init(key)
    old = os.umask(0o027)
    try:
        path = save(tmp_path / "model.npz", net, params)
        assert path.stat().st_mode & 0o777 == 0o640
        os.chmod(path, 0o644)
        save(path, net, params)
        assert path.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_the_folder_is_fsynced_after_the_rename(tmp_path, key, monkeypatch):
    net = Network((4, 2))
    synced, real = [], os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save(tmp_path / "model.npz", net, net.init(key))
    assert synced == [False, True]  # the file, then its folder


def test_a_single_npy_file_is_not_a_checkpoint(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(ValueError, match="holds a single ndarray, not an .npz archive"):
        load(tmp_path / "x.npy")


def test_a_checkpoint_holding_nan_is_refused_by_load(tmp_path, key):
    net = Network((4, 2))
    path = save(tmp_path / "model.npz", net, net.init(key))
    with np.load(path) as data:
        arrays = dict(data)
    arrays["W1"] = np.full_like(arrays["W1"], np.nan)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"params\[0\].W has 8 non-finite entries"):
        load(path)


def test_a_path_that_is_not_a_file_name_is_refused(tmp_path, key):
    net = Network((4, 2))
    with pytest.raises(TypeError, match="path must be a str or os.PathLike; got NoneType"):
        save(None, net, net.init(key))
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        save(tmp_path, net, net.init(key))
