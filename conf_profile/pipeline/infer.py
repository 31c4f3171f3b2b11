"""Stage: the final student (models/rl/, or models/sft/ when RL was skipped) profiles every user ->
profiles/dt=DATE/ + profile_attributes/dt=DATE/, and the same rows as predictions/student_<rl|sft>/ so that
evaluate reports the student beside the teacher stages."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config


def final_model(run_dir: Path) -> tuple[str, Path]:
    for name in ("rl", "sft"):
        if (run_dir / "models" / name / "config.json").exists():
            return name, run_dir / "models" / name
    raise FileNotFoundError(f"no trained student in {run_dir / 'models'} (run train_sft first)")


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile.infer import run_infer

    name, model = final_model(run_dir)
    entry = run_infer(cfg, run_dir, str(model), cfg.infer.date)
    predictions = run_dir / "predictions" / f"student_{name}"
    tmp = predictions.with_name(f".{predictions.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "profile_attributes" / f"dt={entry['date']}", tmp)
    shutil.rmtree(predictions, ignore_errors=True)
    tmp.rename(predictions)
    return {**entry, "student": f"student_{name}", "predictions": str(predictions)}
