"""Write derivations/DERIVATIONS.md: every SymPy derivation in LaTeX, next to its slide.

python scripts/derive.py            # writes derivations/DERIVATIONS.md
python scripts/derive.py --check    # exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from derivations.record import render

PATH = Path(__file__).resolve().parent.parent / "derivations" / "DERIVATIONS.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    args = p.parse_args(argv)
    text = render() + "\n"
    if args.check:
        if not PATH.exists() or PATH.read_text() != text:
            print(f"{PATH} is out of date: run python scripts/derive.py", file=sys.stderr)
            return 1
        print(f"{PATH} is up to date")
        return 0
    PATH.write_text(text)
    print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
