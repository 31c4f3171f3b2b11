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
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.cli import id_key
from conf_profile.core.privacy import pseudonym
from conf_profile.core.profiles import long_form
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
    from conf_profile.infer import replace_folder, run_infer, without_labeled

    name, model = final_model(run_dir)
    entry = run_infer(cfg, run_dir, str(model), cfg.infer.date)
    attributes = pq.read_table(run_dir / "profile_attributes" / f"dt={entry['date']}")
    key = id_key(cfg)
    if key is not None:  # the report joins on the real ids: map the pseudonyms back through the documents
        ids = pq.read_table(run_dir / "documents", columns=["user_id"]).column("user_id").to_pylist()
        real = {pseudonym(u, key): u for u in ids}
        attributes = attributes.set_column(0, "user_id", pa.array([real[p] for p in attributes["user_id"].to_pylist()]))
    attributes = without_labeled(attributes, run_dir)
    for other in {"rl", "sft"} - {name}:  # the other student of an earlier try: the report shows this run's final one
        shutil.rmtree(run_dir / "predictions" / f"student_{other}", ignore_errors=True)
    predictions = run_dir / "predictions" / f"student_{name}"
    replace_folder(predictions, {"part-0.parquet": attributes})
    held_out = len(attributes.column("user_id").unique())
    entry = {**entry, "student": f"student_{name}", "predictions": str(predictions), "held_out_users": held_out}
    if name == "rl":
        scored = _sft_on_scored_users(cfg, run_dir)
        if scored is not None:
            entry["student_sft_scored_users"] = scored
    return entry


def _sft_on_scored_users(cfg: Config, run_dir: Path) -> int | None:
    """predictions/student_sft for the users the teacher labeled for scoring only; None without them."""
    from conf_profile.aggregate import heldout_users
    from conf_profile.infer import profile_users, read_calibration, replace_folder
    from conf_profile.label import read_documents

    users = heldout_users(run_dir)
    if users is None:
        return None
    docs = read_documents(run_dir, ["user_id", "document"])
    docs = docs.filter(pc.is_in(docs.column("user_id"), value_set=pa.array(users, pa.string())))
    model = str(run_dir / "models" / "sft")
    profiles, _ = profile_users(cfg, docs, model, read_calibration(run_dir), run_dir.name)
    replace_folder(run_dir / "predictions" / "student_sft",
                   {"part-0.parquet": long_form(profiles, load_taxonomy(cfg.taxonomy.path))})  # fmt: skip
    return profiles.num_rows
