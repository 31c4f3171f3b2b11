"""Stage: the final student (models/rl/, or models/sft/ when RL was skipped) profiles every user ->
profiles/dt=DATE/ + profile_attributes/dt=DATE/. The rows of the users the teacher did not label (the
student never trained on them) also go to predictions/student_<rl|sft>/, so that evaluate reports the
student on held-out users beside the teacher stages. When the teacher also labeled held-out users for
scoring (label.heldout_users) and the final student is the RL one, the SFT student profiles those users too
(predictions/student_sft), so that the quality ladder has both students on the same users."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa

from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.runs import read_manifest


def final_model(run_dir: Path) -> tuple[str, Path]:
    """models/rl when this run's train_rl trained it (not skipped, not left over from an earlier try), else
    models/sft."""
    stages = read_manifest(run_dir).get("stages", {})
    rl = stages.get("train_rl", {})
    use_rl = rl.get("status") == "ok" and "skipped" not in rl
    for name in ("rl", "sft") if use_rl else ("sft",):
        if (run_dir / "models" / name / "config.json").exists():
            return name, run_dir / "models" / name
    raise FileNotFoundError(f"no trained student in {run_dir / 'models'} (run train_sft first)")


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile.infer import run_infer

    name, model = final_model(run_dir)
    for other in {"rl", "sft"} - {name}:  # the other student of an earlier try: the report shows this run's final one
        shutil.rmtree(run_dir / "predictions" / f"student_{other}", ignore_errors=True)
    entry = run_infer(cfg, run_dir, str(model), cfg.infer.date, predictions=f"student_{name}")
    entry["student"] = f"student_{name}"
    if name == "rl":
        scored = _sft_on_scored_users(cfg, run_dir)
        if scored is not None:
            entry["student_sft_scored_users"] = scored
    return entry


def _sft_on_scored_users(cfg: Config, run_dir: Path) -> int | None:
    """predictions/student_sft for the users the teacher labeled for scoring only; None without them."""
    from conf_profile.aggregate import heldout_users
    from conf_profile.infer import (
        documents_dataset,
        long_dataset,
        long_schema,
        profile_dataset,
        read_calibration,
        write_dataset,
    )

    users = heldout_users(run_dir)
    if users is None:
        return None
    docs = documents_dataset(run_dir, only=pa.array(users, pa.string()))[0]
    profiles, entry = profile_dataset(
        cfg, docs, str(run_dir / "models" / "sft"), read_calibration(run_dir), run_dir.name
    )
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    write_dataset(long_dataset(profiles, taxonomy), run_dir / "predictions" / "student_sft", long_schema(taxonomy))
    return entry["users"]
