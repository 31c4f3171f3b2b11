"""Run the stages in order, recording each in the run manifest; completed stages are skipped on a re-run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conf_profile.core.config import to_dict
from conf_profile.core.settings import Config
from conf_profile.pipeline import (
    aggregate,
    builtin_data,
    embedded_models,
    evaluate,
    ingest,
    label,
    train_rl,
    train_sft,
)
from conf_profile.runs import read_manifest, record_stage

Stage = Callable[[Config, Path], dict[str, Any]]
# Data-flow order. infer joins this list (before evaluate) when it is built.
STAGES: tuple[tuple[str, Stage], ...] = (
    ("builtin_data", builtin_data.run),
    ("ingest", ingest.run),
    ("embedded_models", embedded_models.run),
    ("label", label.run),
    ("aggregate", aggregate.run),
    ("train_sft", train_sft.run),
    ("train_rl", train_rl.run),
    ("evaluate", evaluate.run),
)


def run_pipeline(cfg: Config, run_dir: Path, stages: tuple[tuple[str, Stage], ...] = STAGES) -> dict[str, Any]:
    done = read_manifest(run_dir).get("stages", {})
    results: dict[str, Any] = {}
    for name, stage in stages:
        if done.get(name, {}).get("status") == "ok":
            print(f"pipeline: {name}: already done in {run_dir}, skipped", file=sys.stderr, flush=True)
            results[name] = done[name]
            continue
        print(f"pipeline: {name}: running", file=sys.stderr, flush=True)
        started = time.monotonic()
        entry = {**stage(cfg, run_dir), "status": "ok", "seconds": round(time.monotonic() - started, 1)}
        record_stage(run_dir, name, entry, to_dict(cfg))
        print(f"pipeline: {name}: done in {entry['seconds']}s", file=sys.stderr, flush=True)
        results[name] = entry
    return results
