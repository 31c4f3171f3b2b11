"""Stage: the embedded default's input, the built-in synthetic logs with truth, under ``<run_dir>/input``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config
from conf_profile.synthetic.dataset import write_dataset


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    out = run_dir / "input"
    d = cfg.data
    if (out / "dataset.json").exists():  # written last: the folder is complete (resume)
        summary = json.loads((out / "dataset.json").read_text())
        if (summary["users"], summary["seed"], summary["bad_fraction"], summary["files"]) == (
            d.users,
            d.seed,
            d.bad_fraction,
            d.files,
        ):
            return {"out": str(out), **summary, "reused": True}
    summary = write_dataset(out, d.users, seed=d.seed, bad_fraction=d.bad_fraction, files=d.files, overwrite=True)
    return {"out": str(out), **summary}
