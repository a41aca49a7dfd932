"""The package's layout: the promised names and paths import, imports run one way (checked by
import-linter, which must also catch an upward import), and no module is named like a
function it exports; the top level holds only the subpackages, and the old paths warn."""

import importlib
import inspect
import pkgutil
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import functional_nn as fnn

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = (
    """ACTIVATIONS DATASETS LOSSES OUTPUT_ACTIVATIONS TOLERANCES Activation CheckRow Dataset
EpsStudy FiniteDifferenceResult GradCheckReport GradientMismatch History JacobianFactors Layer
LayerFactors
LeafComparison Loss Network Params Trace autodiff backprop bce check_grad check_gradients check_vjp
compare_gradients complex_step cross_entropy default_eps default_methods eps_study
equivalent_linear_map factor_table finite_difference_grad finite_difference_jacobian
finite_differences fit get_activation get_loss gradient_descent identity jacobian_chain
jacobian_factors load load_dataset local_finite_differences mse num_params objective
observed_order relu save sigmoid softmax softplus tanh weight_penalty""".split()
    + ["Progress", "check_jvp", "TaylorLadder"]
    + ["promote", "CannotPromote"]
    + ["locate", "LocateReport", "Culprit"]
    + ["symbolic", "check_symbolic"]
    + ["data_mesh", "sample_sharding", "replicated", "shard_batch", "DIRECTIONAL_ABOVE"]
    + ["directional_derivatives", "random_directions", "use_persistent_cache"]
    + ["prefer_fast_compilation", "enable_executable_cache", "supported_xla_flags"]
    + ["supported_compile_options"]
)
"""``functional_nn.__all__`` as users' code imports it (the names before the layout change, and
``Progress``, what ``check_grad(callback=...)`` receives, added by issue 19; ``check_jvp`` by
issue 20; ``TaylorLadder``, what ``GradCheckReport.taylor`` holds, by issue 21; ``promote`` and
``CannotPromote`` by issue 34; ``locate`` and its report by issue 35; ``symbolic`` and
``check_symbolic``, which live with SymPy in ``derivations/`` and are imported on first use, by
issue 36; the device meshes, the compile settings and the direction helpers, whose only
public paths were alias modules, by issue 38)."""

MOVED = {
    "functional_nn.compilation_cache": ["use_persistent_cache", "prefer_fast_compilation"],
    "functional_nn.parallel": ["data_mesh", "sample_sharding"],
    "functional_nn.gradcheck": ["DIRECTIONAL_ABOVE", "check_gradients", "TOLERANCES"],
    "functional_nn.executable_cache": ["enable_executable_cache", "store"],
    "functional_nn.xla_options": ["supported_xla_flags", "supported_compile_options"],
}
"""Module paths the README of release 0.1 documented (issue 18 promised to keep them); issue 38
moved their names to public homes and keeps the paths for one release, with a warning."""

SUBPACKAGES = [
    "lecture",
    "differences",
    "checking",
    "training",
    "data",
    "program",
    "testing",
    "_compile",
    "_util",
]


def _modules():
    for info in pkgutil.walk_packages(fnn.__path__, "functional_nn."):
        yield importlib.import_module(info.name)


def test_every_public_name_is_still_fnn_NAME():
    assert sorted(fnn.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(fnn, name) is not None, name


def test_the_top_level_holds_only_the_subpackages_and_init():
    top = {p.name for p in (ROOT / "functional_nn").iterdir() if p.name != "__pycache__"}
    expected = {"__init__.py", "py.typed", *SUBPACKAGES}  # py.typed: PEP 561 wants it here
    assert top == expected, sorted(top ^ expected)


@pytest.mark.parametrize("path", sorted(MOVED))
def test_old_module_paths_warn_with_the_new_home_and_still_work(path):
    sys.modules.pop(path, None)  # as a fresh process imports it
    vars(fnn).pop(path.rsplit(".", 1)[1], None)
    user_code = f"import os\nfrom {path} import {', '.join(MOVED[path])}\n"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        exec(compile(user_code, "users_code.py", "exec"), {})
        module = importlib.import_module(path)  # imported once: no second warning
    assert [(w.category, w.filename, w.lineno) for w in seen] == [
        (DeprecationWarning, "users_code.py", 2)  # at the user's import line
    ]
    message = str(seen[0].message)
    assert message.startswith(f"{path} is deprecated and goes in functional_nn 0.3.0"), message
    assert set(MOVED[path]) <= set(module.__all__)
    for name in module.__all__:
        obj = getattr(module, name)
        if re.search(rf"fnn\.{name}\b", message):  # a public home: the same object as fnn.NAME
            assert obj is getattr(fnn, name), name
        else:  # internal: the message says where it lives now
            assert "the rest is internal now, in functional_nn._" in message, (name, message)
        assert getattr(obj, "__module__", None) != path, name  # never defined in the alias


@pytest.mark.parametrize(
    "user_code",
    ["import functional_nn as fnn\nfnn.gradcheck\n", "from functional_nn import gradcheck\n"],
)
def test_an_old_path_as_an_attribute_of_fnn_warns_at_the_users_line_too(user_code):
    """``fnn.gradcheck`` and ``from functional_nn import gradcheck`` reach the old path through
    ``fnn.__getattr__``: the warning is still the user's line, not importlib's (where Python's
    default filters would hide it: they show a DeprecationWarning of ``__main__`` only)."""
    sys.modules.pop("functional_nn.gradcheck", None)
    vars(fnn).pop("gradcheck", None)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        namespace: dict = {}
        exec(compile("import os\n" + user_code, "users_code.py", "exec"), namespace)
    line = user_code.count("\n") + 1
    assert [(w.category, w.filename, w.lineno) for w in seen] == [
        (DeprecationWarning, "users_code.py", line)
    ]
    assert "fnn.DIRECTIONAL_ABOVE" in str(seen[0].message)
    assert fnn.gradcheck.DIRECTIONAL_ABOVE is fnn.DIRECTIONAL_ABOVE
    with pytest.raises(AttributeError, match="no attribute 'gradchek'"):
        fnn.gradchek  # noqa: B018


def test_each_subpackage_exports_what_fnn_exports_from_it():
    for sub in SUBPACKAGES:
        package = importlib.import_module(f"functional_nn.{sub}")
        assert package.__doc__ and len(package.__doc__) > 80, sub  # says what it holds
        for name in getattr(package, "__all__", []):
            assert hasattr(package, name), f"{sub}.{name}"
            if name in fnn.__all__:
                assert getattr(package, name) is getattr(fnn, name), f"{sub}.{name}"
    homes = {
        getattr(fnn, n).__module__.split(".")[1]
        for n in PUBLIC
        if inspect.isfunction(getattr(fnn, n)) and n not in fnn._WITH_SYMPY
    }
    assert homes <= set(SUBPACKAGES), homes
    for n in fnn._WITH_SYMPY:  # the SymPy-backed names live in derivations/, reached lazily
        assert getattr(fnn, n).__module__.startswith("derivations."), n


def test_no_module_is_named_like_a_function_it_defines():
    for module in _modules():
        stem = module.__name__.rsplit(".", 1)[1].lstrip("_")
        defined = {
            name
            for name, obj in vars(module).items()
            if callable(obj) and getattr(obj, "__module__", None) == module.__name__
        }
        assert stem not in defined, module.__name__


def _lint_imports(root: Path):
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        capture_output=True, text=True, cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
    )  # fmt: skip


def test_imports_run_one_way_and_an_upward_import_is_caught(tmp_path):
    kept = _lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "0 broken" in kept.stdout
    # the same tree with one upward import: the lecture reaching into the checker
    for name in ("functional_nn", "derivations"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    network = tmp_path / "functional_nn" / "lecture" / "_network.py"
    network.write_text(network.read_text() + "\nimport functional_nn.checking._tolerances\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0, broken.stdout
    assert "functional_nn.lecture._network -> functional_nn.checking._tolerances" in broken.stdout
