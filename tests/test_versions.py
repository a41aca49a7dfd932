"""The declared range: pyproject.toml's floors are what CI's oldest environment pins, and the
running versions lie inside the range."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PINNED_TEST = {"equinox", "flax"}  # the test extra's libraries whose floors CI pins too


def _floors() -> dict[str, str]:
    """The run-time floors and those of the test extra's libraries that CI pins."""
    floors = {}
    test = [r for r in PROJECT["optional-dependencies"]["test"] if r.split(">=")[0] in PINNED_TEST]
    for requirement in PROJECT["dependencies"] + test:
        name, floor = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", requirement).groups()
        floors[name.lower()] = floor
    return floors


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_ci_pins_exactly_the_declared_floors():
    pins = {}
    for line in (ROOT / ".ci" / "oldest.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    assert pins == _floors()
    assert set(pins) == {"jax", "jaxlib", "numpy", "optax", "sympy"} | PINNED_TEST


def test_the_running_versions_are_inside_the_declared_range():
    for name, floor in _floors().items():
        assert _version(importlib.metadata.version(name)) >= _version(floor), name


def test_the_tested_pythons_are_declared_and_ci_finds_each():
    declared = {c.rsplit(" ", 1)[-1] for c in PROJECT["classifiers"] if "Python :: 3." in c}
    assert declared == {"3.11", "3.12", "3.13"}
    assert PROJECT["requires-python"] == ">=3.11"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "interpreter 3.13)" in ci and "interpreter 3.11)" in ci
    assert "-c .ci/oldest.txt" in ci
