"""The site's promises that need no Sphinx: its guides' examples run and print what the pages
say, and every public name has an entry in the API reference.

Each page's ```python blocks run in order, in one fresh process (float32: x64 is off there, as
in a user's first session), like the README's example in tests/test_readme.py. A block the
page marks with a ``% not run: why`` line just above it is left out (the several-hosts recipe).
Building the site and checking it in a browser is docs/tests/test_site.py's job (``.ci/run``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import derivations
import functional_nn

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^(% not run[^\n]*\n)?```python\n(.*?)^```", re.S | re.M)


def page_code(name: str) -> str:
    """The page's python blocks that run, joined in order."""
    text = (DOCS / name).read_text()
    return "\n".join(code for skip, code in BLOCK.findall(text) if not skip)


def run_page(name: str, tmp_path: Path, env: dict | None = None) -> str:
    """Run the page's code in a fresh interpreter, in an empty folder (it may write files)."""
    result = subprocess.run(
        [sys.executable, "-c", page_code(name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert result.returncode == 0, f"docs/{name} failed:\n{result.stderr[-4000:]}"
    return result.stdout


# -- every example of every page runs in one of the tests below ----------------------------------

RUN = {"lecture.md", "checking.md", "locate.md", "training.md", "devices.md", "symbolic.md"}


def test_every_page_with_python_examples_has_them_run():
    pages = {p.name for p in DOCS.glob("*.md") if page_code(p.name).strip()}
    assert pages == RUN, f"pages with python blocks not run by a test: {pages - RUN}"


def test_lecture_page_prints_the_slide_and_the_collapse(tmp_path):
    out = run_page("lecture.md", tmp_path)
    expected = re.search(r"```text\n(factor .*?)```", (DOCS / "lecture.md").read_text(), re.S)
    assert expected.group(1) in out
    errors = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("[")]
    assert len(errors) == 2 and max(errors) < 1e-5  # float32
    assert out.rstrip().endswith("True")  # equivalent_linear_map is the network


@pytest.mark.heavy
def test_checking_page_examples_run_and_say_what_the_page_says(tmp_path):
    """The checker guide's examples (the README's "Check your own code" until issue 21)."""
    out = run_page("checking.md", tmp_path)
    assert "OK" in out.splitlines()  # the network's check_gradients
    failing = {
        tuple(line.split()[:2]) for line in out.splitlines() if line.rstrip().endswith("fail")
    }
    assert failing == {("vjp", "['x']"), ("dot-product", "['x']")}, out
    assert "2 FAILED" in out and "[('hvp', \"['w']\")]" in out
    assert "[('jvp', \"['y']\")]" in out  # check_jvp names the rule's wrong argument
    assert "True [('grad', 'kink'" in out  # the ReLU layer: kinks left out, the rest passes
    assert "{\"['b']\": 1, \"['w']\": 2}" in out  # the Taylor slopes: wrong 1, right 2
    assert "(2-4j)" in out  # complex: JAX's convention, and the conjugate fails, located
    assert "[('grad', '(root)'), ('taylor', '(root)')]" in out
    # low precision: a bfloat16 forward judged against itself in float64 (issue 34)
    assert "True check_grad: P=12, 1 leaf, parameters float32, computed in bfloat16" in out
    assert ("reference central (float64) of the promoted program, yardstick 4 x the spread "
            "over 4 one-ulp nudges (bfloat16), at least 4 ulp") in out  # fmt: skip


def test_locate_page_names_the_rule_its_argument_and_its_lines(tmp_path):
    """The page's model: check_grad fails three leaves and names scaled_tanh alone, at the
    lines the page's text block shows (the code runs as ``<string>``, the page says model.py)."""
    out = run_page("locate.md", tmp_path)
    page = (DOCS / "locate.md").read_text()
    culprit = re.search(r"  (scaled_tanh \(custom_vjp.*)", page).group(1)
    assert culprit.replace("model.py", "<string>") in out, out
    assert "3 FAILED" in out and out.count("(custom_vjp, reverse)") == 1


def test_symbolic_page_prints_the_closed_form_it_shows(tmp_path):
    out = run_page("symbolic.md", tmp_path)
    shown = re.search(r"it prints `(.*?)`", (DOCS / "symbolic.md").read_text()).group(1)
    assert shown in out, out


def test_training_page_trains_saves_and_loads(tmp_path):
    out = run_page("training.md", tmp_path)
    stop, same_net = out.split()[-2:]
    assert stop in ("steps", "early_stopping") and same_net == "True"
    assert (tmp_path / "model.npz").exists()


def test_devices_page_trains_on_four_simulated_devices(tmp_path):
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    out = run_page("devices.md", tmp_path, env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
    assert "4 devices: steps" in out


# -- the API reference --------------------------------------------------------------------------

ENTRY = re.compile(r"^\.\. (?:auto(?:function|class|data|exception|attribute)|py:\w+):: (\S+)")


def api_entries() -> set[str]:
    """The full names the API reference documents (``.. autofunction:: name`` and the like,
    resolved against the page's ``.. currentmodule::``)."""
    names = set()
    for page in sorted((DOCS / "api").glob("*.rst")):
        module = ""
        for line in page.read_text().splitlines():
            if line.startswith(".. currentmodule:: "):
                module = line.split("::", 1)[1].strip()
            elif m := ENTRY.match(line):
                name = m.group(1)
                names.add(name if "." in name or not module else f"{module}.{name}")
    return names


@pytest.mark.parametrize("package", [functional_nn, derivations], ids=lambda p: p.__name__)
def test_every_public_name_has_an_api_entry(package):
    entries = api_entries()
    missing = [n for n in package.__all__ if f"{package.__name__}.{n}" not in entries]
    assert not missing, f"no entry in docs/api/*.rst for {package.__name__}: {missing}"


def test_api_entries_name_only_what_exists():
    stale = []
    for name in api_entries():
        module, _, attr = name.rpartition(".")
        obj = sys.modules.get(module) or __import__(module, fromlist=["_"])
        if not hasattr(obj, attr):
            stale.append(name)
    assert not stale, f"docs/api/*.rst documents names that do not exist: {stale}"
