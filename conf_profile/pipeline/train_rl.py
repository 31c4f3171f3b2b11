"""Stage: rl/ + models/sft/ -> models/rl/ (conf_profile.train_rl: GRPO on Ray Train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile.train_rl import run_train_rl

    return run_train_rl(cfg, run_dir)
