"""The package as a non-editable install sees it (issue 33): every package of the source tree is
in the distribution that setuptools builds. `.ci/run` builds the sdist and the wheel and runs
validate.py and the README's example from the installed wheel; this test catches a package
left out in a second, without a build."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _source_packages() -> set[str]:
    """Every folder of the two distributed trees that Python imports as a package."""
    found = set()
    for top in ("functional_nn", "derivations"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def _distributed(packages: set[str]) -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "packages" not in config or "find" in config["packages"], (
        "a hand-kept list of packages leaves subpackages out of the wheel: use packages.find"
    )
    find = config["packages"]["find"]
    include = find.get("include", ["*"])
    exclude = find.get("exclude", [])
    return {
        name
        for name in packages
        if any(fnmatch.fnmatchcase(name, p) for p in include)
        and not any(fnmatch.fnmatchcase(name, p) for p in exclude)
    }


def test_every_subpackage_is_distributed():
    packages = _source_packages()
    assert {"functional_nn.checking", "functional_nn.lecture", "derivations"} <= packages
    missing = packages - _distributed(packages)
    assert not missing, f"packages the wheel would leave out: {sorted(missing)}"


def test_the_library_loads_no_file_that_a_wheel_leaves_out():
    """A wheel carries the packages' .py files (and package-data, none declared): any other
    file inside the library would be missing once installed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = config.get("package-data", {})
    other = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "functional_nn").rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    globs = [g for patterns in declared.values() for g in patterns]
    undeclared = [p for p in other if not any(fnmatch.fnmatch(Path(p).name, g) for g in globs)]
    assert not undeclared, f"files in the library that no package-data entry ships: {undeclared}"


def test_the_version_is_the_same_in_pyproject_the_package_and_the_changelog():
    import re

    import functional_nn

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert functional_nn.__version__ == declared
    top = re.search(r"^## (\S+) \(", (ROOT / "CHANGELOG.md").read_text(), re.M).group(1)
    assert top == declared, f"CHANGELOG.md's newest entry is {top}, the package is {declared}"


def test_the_packages_say_they_are_typed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in ("functional_nn", "derivations"):
        assert (ROOT / package / "py.typed").is_file(), package
        assert "py.typed" in config["package-data"][package], package
