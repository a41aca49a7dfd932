"""The README's promises: its Quickstart, CI running the same test command, its example, and
the way into the docs."""

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


def test_readme_says_how_to_build_the_docs_and_links_into_them():
    """The front page: one command builds the site, and its links name pages that exist (the
    checker guide's examples, once here, run in tests/test_docs.py)."""
    block = re.search(r"## The documentation\n.*?```bash\n(.*?)```", README, re.S)
    assert block, "README.md must give the command that builds the docs"
    (command,) = [line for line in block.group(1).splitlines() if line.strip()]
    assert '".[docs]"' in command and "sphinx-build -W --keep-going -b html docs" in command
    links = re.findall(r"\]\((docs/[^)#]+)", README)
    assert len(links) >= 8, links
    missing = [link for link in links if not (ROOT / link).is_file()]
    assert not missing, missing


def test_no_readme_section_is_longer_than_a_screen():
    sections = re.split(r"^(?=## )", README, flags=re.M)
    long = {s.splitlines()[0]: len(s.splitlines()) for s in sections if len(s.splitlines()) > 50}
    assert not long, f"README sections over 50 lines (move them to docs/): {long}"
