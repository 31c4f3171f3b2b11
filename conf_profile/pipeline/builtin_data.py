"""Stage: the pipeline's input. The configured logs, or (by default) the built-in synthetic logs with truth,
generated under ``<run_dir>/input``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config
from conf_profile.synthetic.dataset import write_dataset


def logs_path(cfg: Config, run_dir: Path) -> str:
    return cfg.input.logs or str(run_dir / "input" / "logs")


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    if cfg.input.logs:
        return {"logs": cfg.input.logs, "builtin": False}
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
            return {"logs": logs_path(cfg, run_dir), "builtin": True, **summary, "reused": True}
    summary = write_dataset(out, d.users, seed=d.seed, bad_fraction=d.bad_fraction, files=d.files, overwrite=True)
    return {"logs": logs_path(cfg, run_dir), "builtin": True, **summary}
