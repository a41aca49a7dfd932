"""XLA options and flags that the running jaxlib does not know (fnn.supported_xla_flags,
fnn.supported_compile_options).

A future jaxlib drops or renames options (0.12 dropped ``xla_cpu_use_fusion_emitters``): the
library must leave out what this XLA does not know, never crash a program.
"""

import json
import os
import subprocess
import sys

import pytest

from functional_nn._compile import _xla_options as xla_options
from functional_nn._compile._options import update_if_known
from functional_nn._compile._xla_options import supported_compile_options, supported_xla_flags

UNKNOWN = "xla_functional_nn_no_such_option"


def test_compile_options_this_xla_does_not_know_are_left_out():
    options = {"xla_backend_optimization_level": 0, UNKNOWN: 1}
    assert supported_compile_options(options) == {"xla_backend_optimization_level": 0}
    assert supported_compile_options({UNKNOWN: 1}) == {}
    assert supported_compile_options(None) == {}


def test_a_compile_option_with_a_value_xla_cannot_parse_is_left_out():
    options = {"xla_backend_optimization_level": "fast", "xla_llvm_disable_expensive_passes": True}
    assert supported_compile_options(options) == {"xla_llvm_disable_expensive_passes": True}


def test_a_jax_setting_this_jax_does_not_have_is_skipped():
    assert update_if_known("jax_functional_nn_no_such_setting", True) is False


class _Children:
    """A stand-in for the child process: accepts the names in ``known``, counts the calls."""

    def __init__(self, known, answer_for_unknown=False):
        self.known, self.unknown, self.calls = set(known), answer_for_unknown, []

    def __call__(self, flags):
        self.calls.append(dict(flags))
        return True if set(flags) <= self.known else self.unknown


def test_flags_are_tried_together_then_alone_and_the_answer_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    children = _Children(known={"xla_a"})
    monkeypatch.setattr(xla_options, "_child_accepts", children)
    flags = {"xla_a": "1", "xla_b": "true"}
    assert supported_xla_flags(flags) == {"xla_a": "1"}
    assert children.calls == [flags, {"xla_a": "1"}, {"xla_b": "true"}]
    (kept,) = (tmp_path / "functional_nn" / "xla-flags").glob("*.json")
    assert json.loads(kept.read_text()) == {"xla_a": "1"}
    assert supported_xla_flags(flags) == {"xla_a": "1"}  # read back: no child this time
    assert len(children.calls) == 3
    assert supported_xla_flags({"xla_a": "1"}) == {"xla_a": "1"}  # another set: asked anew
    assert len(children.calls) == 4


def test_a_child_that_timed_out_is_asked_again_next_time(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    children = _Children(known={"xla_a"}, answer_for_unknown=None)
    monkeypatch.setattr(xla_options, "_child_accepts", children)
    assert supported_xla_flags({"xla_a": "1", "xla_b": "2"}) == {"xla_a": "1"}
    assert not list(tmp_path.rglob("*.json"))
    supported_xla_flags({"xla_a": "1", "xla_b": "2"})
    assert len(children.calls) == 6


def test_an_unwritable_cache_folder_still_gives_the_answer(tmp_path, monkeypatch):
    (tmp_path / "functional_nn").write_text("a file where the folder belongs")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(xla_options, "_child_accepts", _Children(known={"xla_a"}))
    assert supported_xla_flags({"xla_a": "1", "xla_b": "2"}) == {"xla_a": "1"}


FUTURE_JAXLIB = f"""
import os, sys
from functional_nn import _compile as compile_settings
# the fast settings as a future jaxlib would present them: one name it does not know in each
compile_settings.FAST_XLA_FLAGS["xla_functional_nn_no_such_flag"] = "true"
compile_settings.FAST_COMPILE["{UNKNOWN}"] = 1
compile_settings.use_persistent_cache(sys.argv[1], executables=True)
compile_settings.prefer_fast_compilation()
print("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import functional_nn as fnn
net = fnn.Network((4, 3, 2), bias=False)
params = net.init(jax.random.key(0), jnp.float64)
x = jax.random.normal(jax.random.key(1), (8, 4), jnp.float64)
y = (x[:, :2] > 0).astype(jnp.float64)
fnn.check_gradients(net, "bce", params, x, y).raise_if_failed()
print("OPTIONS", sorted(compile_settings.fast_compile_options()))
print("CLEAN")
"""


@pytest.mark.heavy
def test_unknown_names_in_the_fast_settings_give_a_clean_run(tmp_path):
    """The library's own fast settings with a flag and an option that XLA does not know: the
    check runs through; the same flag given to XLA directly ends the process."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("XLA_FLAGS", None)
    run = subprocess.run(
        [sys.executable, "-c", FUTURE_JAXLIB, str(tmp_path / "jax")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0 and "CLEAN" in run.stdout, run.stderr[-3000:]
    (flags,) = [line for line in run.stdout.splitlines() if line.startswith("XLA_FLAGS")]
    assert "no_such_flag" not in flags
    assert "--xla_cpu_parallel_codegen_split_count=1" in flags  # known: kept
    (options,) = [line for line in run.stdout.splitlines() if line.startswith("OPTIONS")]
    assert UNKNOWN not in options and "xla_backend_optimization_level" in options

    crash = subprocess.run(
        [sys.executable, "-c", "import jax.numpy as jnp; jnp.ones(2).sum()"],
        env={**env, "XLA_FLAGS": "--xla_functional_nn_no_such_flag=true"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crash.returncode != 0 and "Unknown flag" in crash.stderr


@pytest.mark.parametrize("flags", [{}, {"xla_cpu_parallel_codegen_split_count": "1"}])
def test_a_real_child_accepts_flags_xla_knows(flags):
    assert xla_options._child_accepts(flags) is True
