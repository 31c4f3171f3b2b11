"""Stage: documents/ -> teacher_samples/ (conf_profile.label)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile.label import run_label

    return run_label(cfg, run_dir)
