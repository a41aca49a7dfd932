"""The pytest plugin, as a user meets it: pytest run on the user's test file of
docs/testing.md (its strategy from functional_nn.testing, a gradient 5% off in one leaf)
prints the failing report's table; with the plugin turned off, it does not."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "testing.md"
USERS_TESTS = re.search(r"% not run: a pytest file.*?\n```python\n(.*?)^```", DOCS.read_text(),
                        re.S | re.M).group(1)  # fmt: skip
"""The test file of docs/testing.md, as a user would save it."""


def run_pytest(tmp_path, *args):
    (tmp_path / "test_users_code.py").write_text(USERS_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_users_code.py", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-q", *args],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip


@pytest.mark.heavy
def test_a_failing_check_prints_its_table_in_pytests_output(tmp_path):
    run = run_pytest(tmp_path)
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "3 failed, 1 passed" in out, out
    for test in ("test_in_one_assert", "test_a_report_in_a_local", "test_raise_if_failed"):
        failure = out.split(f"_ {test} _", 1)[1].split("\n___", 1)[0]
        section = failure.split("functional_nn: failing check", 1)
        assert len(section) == 2, (test, failure)  # the section, once per failing test
        table = section[1]
        assert "grad" in table and "fail" in table, table  # the report's rows: method, verdict
    local = out.split("_ test_a_report_in_a_local _", 1)[1].split("\n___", 1)[0]
    table = local.split("functional_nn: failing check", 1)[1]
    assert "['b']" in table and "['w']" in table, table  # every leaf's row, the wrong one named
    assert "pass" in table  # ['b'] is right


def test_without_the_plugin_no_table_is_added(tmp_path):
    run = run_pytest(tmp_path, "-p", "no:functional_nn", "-k", "a_report_in_a_local")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "functional_nn: failing check" not in run.stdout, run.stdout


def test_loading_the_plugin_imports_neither_the_library_nor_hypothesis():
    """pytest loads the plugin in every run of an environment that installs functional_nn,
    with or without Hypothesis (only the testing extra brings it): loading it must cost
    nothing and need nothing (the entry point is pytest's own way in)."""
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "functional_nn"]
    probe = (
        "import sys\n"
        f"import {plugin.value}\n"
        "print(sorted(m for m in ('jax', 'functional_nn', 'hypothesis', 'numpy')"
        " if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout
