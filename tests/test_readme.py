"""The README's promises: its Quickstart, CI running the same test command, its example."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _quickstart():
    block = re.search(r"## Quickstart\s+```bash\n(.*?)```", README, re.S)
    assert block, "README.md must open with a Quickstart bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_is_two_commands_install_validate_and_test():
    commands = _quickstart()
    assert len(commands) == 2
    assert "pip install" in commands[0] and "scripts/validate.py" in commands[0]
    assert "pip install" in commands[1] and '".[test]"' in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quickstart()[1] in ci.splitlines()


def test_readme_example_runs_and_prints_the_slide():
    code = re.search(r"## A short example\s+```python\n(.*?)```", README, re.S).group(1)
    expected = re.search(r"```\n(factor .*?)```", README, re.S).group(1)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert expected in out
    errors = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("[")]
    assert len(errors) == 2 and max(errors) < 1e-5  # float32: x64 is off in a fresh process


def test_check_your_own_code_examples_run_and_say_what_the_readme_says():
    """The section's python blocks, run in order in a fresh process (float32: x64 off)."""
    section = re.search(r"## Check your own code\n(.*?)\n## ", README, re.S).group(1)
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    failing = {
        tuple(line.split()[:2]) for line in out.splitlines() if line.rstrip().endswith("fail")
    }
    assert failing == {("vjp", "['x']"), ("dot-product", "['x']")}, out
    assert "2 FAILED" in out and "[('hvp', \"['w']\")]" in out
    assert "[('jvp', \"['y']\")]" in out  # check_jvp names the rule's wrong argument
    assert "True [('grad', 'kink'" in out  # the ReLU layer: kinks left out, the rest passes
