"""Stage: report/ against truth, when there is truth (input.truth, or the built-in data's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config
from conf_profile.evaluate import run_evaluate


def truth_path(cfg: Config, run_dir: Path) -> str | None:
    if cfg.input.truth:
        return cfg.input.truth
    builtin = run_dir / "input" / "truth.parquet"
    return str(builtin) if not cfg.input.logs and builtin.exists() else None


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    truth = truth_path(cfg, run_dir)
    if truth is None:
        return {"skipped": "no truth: set input.truth to evaluate"}
    return run_evaluate(cfg, run_dir, truth)
