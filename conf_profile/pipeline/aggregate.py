"""Stage: teacher_samples/ -> votes/, calibration.json, sft/, rl/ (conf_profile.aggregate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.aggregate import run_aggregate
from conf_profile.core.settings import Config


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    return run_aggregate(cfg, run_dir)
