"""Stage: report/ against truth, when there is truth (input.truth, or the built-in data's own).

In a run with held-out users (label.heldout_users) the references (conf_profile.references) are fitted
first, on every other user's truth, so that the quality ladder compares each stage with ref_majority."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.aggregate import heldout_users
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
    written: list[str] = []
    if heldout_users(run_dir) is not None:
        from conf_profile.references import run_references

        written = run_references(cfg, run_dir, truth)["written"]
    entry = run_evaluate(cfg, run_dir, truth)
    return {**entry, "written": [*entry["written"], *written]}
