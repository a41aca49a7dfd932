"""Write derivations/DERIVATIONS.md: every SymPy derivation in LaTeX, next to its slide.

python scripts/derive.py            # writes derivations/DERIVATIONS.md
python scripts/derive.py --check    # exit 1 if the committed file is out of date: its exact
                                    # part (the proofs), and the ULP tables' ranges and verdicts
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from derivations.record import TABLES, render

PATH = Path(__file__).resolve().parent.parent / "derivations" / "DERIVATIONS.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    if args.check:
        committed = PATH.read_text() if PATH.exists() else ""
        exact, heading, measured = committed.partition(TABLES)
        fresh = render(tables=True) + "\n"
        if exact != fresh.partition(TABLES)[0] or not heading:
            print(f"{PATH} is out of date: run python scripts/derive.py", file=sys.stderr)
            return 1
        if _skeleton(measured) != _skeleton(fresh.partition(TABLES)[2]):
            print(f"{PATH}: the ULP tables' ranges or verdicts changed: run python "
                  "scripts/derive.py", file=sys.stderr)  # fmt: skip
            return 1
        print(f"{PATH} is up to date")
        return 0
    text = render() + "\n"
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


_ROW = re.compile(r"^(value|d\d) +(\S+, \S+|0) +(\d+) ")


def _skeleton(tables: str) -> list[str]:
    """The tables without their measured numbers: headings, each row's quantity, range and
    point and failure counts, and the verdicts."""
    out = []
    for line in tables.splitlines():
        row = _ROW.match(line)
        if line.startswith("###") or line in ("OK", "FAILED"):
            out.append(line)
        elif row:
            out.append(" ".join([*row.groups(), line.split()[-1]]))  # and its failed count
    return out


if __name__ == "__main__":
    sys.exit(main())
