"""Write the configuration reference generated from the config classes.

    python -m jobs.config_reference [--out docs/configuration.md] [--check]

--check exits 1 when the file is not what the code generates (CI runs it through the tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conf_profile.core.config_docs import config_reference

DEFAULT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.config_reference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, default=DEFAULT, help="where to write (default: docs/configuration.md)")
    parser.add_argument("--check", action="store_true", help="only check that the file is current")
    args = parser.parse_args(argv)
    text = config_reference()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            sys.exit(f"{args.out} is out of date: run python -m jobs.config_reference")
        print(f"{args.out} is current")
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
