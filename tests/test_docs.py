"""The code and docs cite only files inside the repository: every ``docs/*.md`` they name exists, and no
design or style note from outside the repository is cited."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = ("DESIGN" + ".md", "STYLE" + ".md")  # notes that are not in the repository (split: this file is scanned)


def _tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    keep = (".py", ".md", ".yaml", ".yml", ".toml", ".sh", "Makefile")
    return [ROOT / n for n in names if n.endswith(keep) and (ROOT / n).is_file()]


def test_cited_docs_exist_and_nothing_outside_the_repository_is_cited() -> None:
    missing, outside = set(), set()
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        missing |= {m for m in re.findall(r"\bdocs/[\w-]+\.md\b", text) if not (ROOT / m).is_file()}
        outside |= {f"{path.relative_to(ROOT)}: {name}" for name in OUTSIDE if name in text}
    assert not missing, f"cited but not in the repository: {sorted(missing)}"
    assert not outside, f"cites files outside the repository: {sorted(outside)}"
