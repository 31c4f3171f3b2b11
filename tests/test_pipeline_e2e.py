"""The whole pipeline as users run it (quick profile on the tiny model): first under `ray job submit` against
a real local Ray head (127.0.0.1) with the checked-in runtime environment, as a data engineer runs it on a
cluster; then `python -m jobs.pipeline` on the same run directory. Every input user ends in profiles/ or
rejects/, the tables match the contract, a re-run resumes, --from/--to redo a range, and re-running a date
replaces its partition. One pipeline run serves all of these checks (a second full run under job submit
alone would repeat every stage for the same assertions): conftest's `quick_run`, which test_interruptions
also takes as its uninterrupted reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from conftest import QUICK_DATE as DATE
from conftest import QUICK_HELDOUT as HELDOUT

from conf_profile.core.profiles import LONG_COLUMNS, profile_schema
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.runner import STAGE_NAMES
from conf_profile.stages.infer import PROVENANCE

ROOT = Path(__file__).resolve().parents[1]


def _pipeline(run_dir: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["--config", "jobs/configs/quick.yaml", "--run-dir", str(run_dir), "--set", f"models.cache_dir={cache}",
            "--set", f"infer.date={DATE}", *extra]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "jobs.pipeline", *args], cwd=ROOT, capture_output=True, text=True, timeout=1500
    )


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
def test_quick_pipeline_end_to_end(quick_run) -> None:
    run_dir, cache, first, token = quick_run.run_dir, quick_run.cache, quick_run.submit, quick_run.token
    # ray job submit streams the job's stdout and stderr back into its own output
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "succeeded" in (first.stdout + first.stderr).lower()
    assert token not in first.stdout + first.stderr  # the secret is never printed
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s for s in STAGE_NAMES if manifest["stages"][s]["status"] == "ok"] == list(STAGE_NAMES)
    assert set(manifest["run"]) >= {"taxonomy_version", "teacher_prompt_version", "student_prompt_version"}
    assert manifest["stages"]["label"]["teachers"]["t"]["rows"] == 12
    assert manifest["stages"]["label"]["heldout_teachers"]["t"]["rows"] == 12

    # Held-out users: labeled for scoring only, never in a training set; every stage scored on them.
    def users(folder: str) -> set[str]:
        return set(pq.read_table(run_dir / folder, columns=["user_id"]).column("user_id").to_pylist())

    heldout, labeled = users("teacher_samples_heldout"), users("teacher_samples")
    assert len(heldout) == 6 and len(labeled) == 6 and not heldout & labeled
    assert users("votes_heldout") == heldout and users("votes") == labeled
    assert not heldout & (users("sft") | users("rl"))
    assert users("predictions/student_sft") == heldout and heldout <= users("predictions/student_rl")
    ladder = json.loads((run_dir / "report" / "metrics.json").read_text())["ladder"]
    assert ladder["users"] == 6 and ladder["left_out"] == []
    assert list(ladder["stages"])[:7] == ["teacher_single", "teacher_majority", "teacher_vote_raw", "teacher_vote",
                                          "teacher_vote_token", "student_sft", "student_rl"]  # fmt: skip
    assert ladder["stages"]["student_rl"]["vs_reference"]["stage"] == "ref_majority"
    assert "quality ladder:  every stage on the same 6 held-out users (macro F1" in first.stdout

    # Conservation: every user of the raw logs is profiled or rejected with a reason.
    raw = pads.dataset(run_dir / "input" / "logs").to_table(columns=["user_id"])
    input_users = {u for u in raw.column("user_id").to_pylist() if u}
    profiles = pq.read_table(run_dir / "profiles" / f"dt={DATE}")
    rejects = pq.read_table(run_dir / "rejects")
    profiled = profiles.column("user_id").to_pylist()
    rejected_users = set(rejects.filter(pc.equal(rejects["reason"], "no_usable_events"))["user_id"].to_pylist())
    assert len(profiled) == len(set(profiled))  # one row per user
    assert input_users == set(profiled) | rejected_users and not set(profiled) & rejected_users
    assert len(input_users) == 30 and manifest["stages"]["infer"]["users"] == len(profiled)
    assert len(profiled) == manifest["stages"]["ingest"]["users_out"] > 0
    assert "every input user accounted for" in first.stdout

    # The contract's schema (docs/architecture.md 1), provenance included; the long form beside it.
    taxonomy = load_taxonomy()
    assert profiles.schema.remove_metadata() == profile_schema(taxonomy, PROVENANCE)
    assert set(profiles.column("taxonomy_version").to_pylist()) == {taxonomy.version}
    assert set(profiles.column("run_id").to_pylist()) == {run_dir.name}
    attributes = pq.read_table(run_dir / "profile_attributes" / f"dt={DATE}")
    assert set(LONG_COLUMNS) <= set(attributes.column_names)
    assert attributes.num_rows == len(profiled) * len(taxonomy.attribute_names)
    # Hostile content (quick.yaml: data.hostile_fraction): the users stay, the report measures adoption.
    hostile = pq.read_table(run_dir / "input" / "hostile.parquet").column("user_id").to_pylist()
    assert hostile and set(hostile) <= set(profiled)
    report = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert all("injection" in s for s in report["stages"].values()) and "injection adopted" in first.stdout
    student = manifest["stages"]["infer"]["student"]
    assert student in manifest["stages"]["evaluate"]["stages"]  # the student is in the report
    assert (run_dir / "report" / "index.html").exists() and student in first.stdout

    # A re-run resumes: nothing is redone.
    second = _pipeline(run_dir, cache, *HELDOUT)
    assert second.returncode == 0, second.stderr[-3000:]
    assert all(f"{s}: already done" in second.stderr for s in STAGE_NAMES)

    # Side jobs on the finished run: the references and a report on their test users. No --config: they
    # take the run's own settings (quick.yaml's) from its manifest.
    common = ["--run-dir", str(run_dir), "--truth", str(run_dir / "input" / "truth.parquet")]
    for job in (
        ["jobs.references"],
        ["jobs.evaluate", "--users", str(run_dir / "references" / "test_users.parquet"), "--report", "test"],
    ):
        side = subprocess.run([sys.executable, "-m", *job, *common], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert side.returncode == 0, side.stderr[-3000:]
    assert {"ref_majority", "ref_logreg"} <= {p.name for p in (run_dir / "predictions").iterdir()}
    assert (run_dir / "test" / "metrics.json").exists()

    # --from infer --to infer: the same date again replaces the partition, never duplicates it. The side
    # jobs' entries and outputs, computed from the old outputs, are removed.
    third = _pipeline(run_dir, cache, *HELDOUT, "--from", "infer", "--to", "infer")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "removed the stale outputs of evaluate_test, references" in third.stderr
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert not {"references", "evaluate_test"} & set(stages)
    assert not (run_dir / "test").exists() and not (run_dir / "references").exists()
    assert not {"ref_majority", "ref_logreg"} & {p.name for p in (run_dir / "predictions").iterdir()}
    ran = [line.split(":")[1].strip() for line in third.stderr.splitlines() if line.endswith(": running")]
    assert ran == ["infer"]
    again = pq.read_table(run_dir / "profiles" / f"dt={DATE}")
    assert sorted(again.column("user_id").to_pylist()) == sorted(profiled)
    assert [p.name for p in (run_dir / "profiles").iterdir()] == [f"dt={DATE}"]
    assert "evaluate" not in json.loads((run_dir / "manifest.json").read_text())["stages"]  # stale: dropped


def test_from_and_to_are_checked_before_any_work(tmp_path) -> None:
    res = _pipeline(tmp_path / "run", tmp_path / "cache", "--from", "aggregate")
    assert res.returncode == 2 and "earlier stages builtin_data, ingest" in res.stderr
    res = _pipeline(tmp_path / "run", tmp_path / "cache", "--to", "nope")
    assert res.returncode == 2 and "--to nope: no such stage" in res.stderr
    res = _pipeline(tmp_path / "run", tmp_path / "cache", "--from", "infer", "--to", "label")
    assert res.returncode == 2 and "comes after" in res.stderr
