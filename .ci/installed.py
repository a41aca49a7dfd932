"""CI's check of a non-editable install (issue 33): run from a folder outside the source tree,
with the interpreter of an environment that installed the project from a wheel or by
`pip install .`. It proves that the installed package, not the source tree, is what imports,
then runs the README's example (and checks that it prints the slide) and scripts/validate.py.

    python .ci/installed.py ROOT      # ROOT: the clone, for README.md and scripts/validate.py
"""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve()
here = Path.cwd().resolve()
assert ROOT not in (here, *here.parents), f"run me outside the source tree, not in {here}"

import derivations  # noqa: E402
import functional_nn  # noqa: E402

for module in (functional_nn, derivations):
    origin = Path(module.__file__).resolve()
    source = ROOT / module.__name__  # the clone's own copy (the venvs may lie inside ROOT)
    assert not origin.is_relative_to(source), f"{module.__name__} imported from the clone: {origin}"
    assert "site-packages" in origin.parts, f"{module.__name__} is not installed: {origin}"
print(f"installed: functional_nn from {Path(functional_nn.__file__).parent}")

readme = (ROOT / "README.md").read_text()
code = re.search(r"## A short example\s+```python\n(.*?)```", readme, re.S).group(1)
expected = re.search(r"```\n(factor .*?)```", readme, re.S).group(1)
run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
assert run.returncode == 0, run.stderr
assert expected in run.stdout, run.stdout
print("installed: the README's example prints the slide")

env = {**os.environ, "PYTHONPATH": ""}
validate = subprocess.run([sys.executable, str(ROOT / "scripts" / "validate.py")], env=env)
assert validate.returncode == 0, f"validate.py exited {validate.returncode}"
print("installed: validate.py passed")
