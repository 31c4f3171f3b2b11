"""Stage: raw logs -> documents/ + rejects/ (conf_profile.ingest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config
from conf_profile.ingest import run_ingest
from conf_profile.pipeline.builtin_data import logs_path


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    return run_ingest(cfg.ingest, logs_path(cfg, run_dir), run_dir, cfg.ray)
