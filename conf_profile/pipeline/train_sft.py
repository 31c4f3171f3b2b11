"""Stage: sft/ -> models/sft/ (conf_profile.train_sft: Ray Train + DeepSpeed + TRL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile.train_sft import run_train_sft

    return run_train_sft(cfg, run_dir)
