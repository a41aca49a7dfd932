"""``line_of``: the ``"file.py:N"`` a test expects a culprit at, from a marker comment."""

from pathlib import Path


def line_of(path: str, marker: str) -> str:
    """``"name.py:N"`` of the line of ``path`` that ends with ``marker`` (a comment), the way
    ``locate`` names a line."""
    with open(path) as fh:
        for n, text in enumerate(fh, 1):
            if text.rstrip().endswith(marker) and "line_of(" not in text:
                return f"{Path(path).name}:{n}"
    raise AssertionError(f"{marker!r} is on no line of {path}")
