"""Interruptions, on a run directory on an object store (conftest's s3_server: moto on 127.0.0.1): the
pipeline driver is killed (SIGKILL, with its local Ray) in the middle of labeling, and later in the middle of
inference; the same command again resumes, and the final tables hold the same users and keys as an
uninterrupted run's, without duplicates or gaps. Documents are deterministic and must be equal; the rows
labeled before the kill are kept as they were, and nothing of the run lands on the local disk.

The uninterrupted run is conftest's `quick_run` (the end-to-end test's run, same data and stages, on a local
disk). This run labels with one greedy sample per user instead of its two, by two teachers one after the
other: each teacher's sample keys are compared with its sample 0 (the keys of documents, votes and profiles
do not depend on the number of samples or teachers). The stage writes a teacher's rows when its engine is
done with them, so the kill, at the first teacher's first rows, lands while the second teacher's engine
starts: inside the stage, whatever the timing.

One run takes both kills: a local run directory and one on an object store share the stages' code and
differ in the file primitives (a rename against a copy), whose writers tests/test_object_store.py checks on
both; the local disk's resume is the end-to-end test's (a second command on its finished run) and the SFT
fault test's."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import QUICK_DATE as DATE
from conftest import TWO_TEACHERS, kill_session

from conf_profile import fs
from conf_profile.fs import ObjectPath, location
from conf_profile.storage import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def _cmd(cache: Path, *where: str) -> list[str]:
    config = str(ROOT / "jobs" / "configs" / "quick.yaml")
    return [sys.executable, "-m", "jobs.pipeline", "--config", config, "--set", f"models.cache_dir={cache}",
            "--set", TWO_TEACHERS, "--set", f"infer.date={DATE}", *where]  # fmt: skip


def _kill_session(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of the Ray it started, as a lost machine would. Ray's workers have
    process groups of their own (a killpg alone leaves them to die a moment later, and one may still finish
    writing a file then), but they share the driver's session: kill every live process of it."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    kill_session(driver.pid)


def _outputs(run: ObjectPath) -> dict[tuple[str, str, int], str]:
    """(teacher, user, sample) -> the teacher's output, of the samples in the run (an object appears whole
    or not at all)."""
    rows = fs.read_table(run / "teacher_samples", columns=["teacher", "user_id", "sample", "raw_text"]).to_pylist()
    return {(r["teacher"], r["user_id"], r["sample"]): r["raw_text"] for r in rows}


def _table(where: Path | ObjectPath, columns: list[str], sort: list[str]) -> list[dict]:
    return fs.read_table(where, columns=columns).sort_by([(c, "ascending") for c in sort]).to_pylist()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
@pytest.mark.fault
def test_a_killed_pipeline_on_an_object_store_resumes_and_ends_with_the_uninterrupted_tables(
    s3_server, quick_run, tmp_path
) -> None:
    assert quick_run.submit.returncode == 0, (quick_run.submit.stdout + quick_run.submit.stderr)[-3000:]
    ref, cache = quick_run.run_dir, quick_run.cache
    root = location(f"s3://runs/{secrets.token_hex(4)}")
    work = tmp_path / "cwd"  # the jobs' working directory: nothing of the run may land there
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # A new run under run.runs_root (its name in `latest`), killed once the first labeled rows are there.
    log = tmp_path / "killed.log"  # a file, not a pipe: nobody reads a pipe while the job runs, and a full one blocks
    with open(log, "w") as out:
        proc = subprocess.Popen(_cmd(cache, "--set", f"run.runs_root={root}"), cwd=work, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline, run, killed_in = time.monotonic() + 900, None, None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            latest = root / "latest"
            if run is None and latest.is_file():
                run = root / latest.read_text().strip()
            labeling = "pipeline: label: running" in log.read_text()
            if labeling and run is not None and any((run / "teacher_samples").rglob("*.parquet")):
                killed_in = "label"
                break
            time.sleep(0.2)
    finally:
        _kill_session(proc)
    assert killed_in == "label" and proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    assert isinstance(run, ObjectPath)
    stages = read_manifest(run)["stages"]
    assert stages["ingest"]["status"] == "ok" and "label" not in stages  # killed in label
    before = _outputs(run)
    assert before and {teacher for teacher, _, _ in before} == {"t"}  # the first teacher's rows only: mid-stage

    cmd = _cmd(cache, "--run-dir", str(run))
    resumed = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ingest: already done" in resumed.stderr  # completed work is not redone
    assert f"({len(before)} already done)" in resumed.stderr  # labeled rows are kept, only the rest is labeled
    assert list(work.iterdir()) == [], "the run wrote to the local working directory"
    stages = read_manifest(run)["stages"]
    assert all(stages[s]["status"] == "ok" for s in ("label", "aggregate", "train_sft", "train_rl", "infer"))

    # Same users and keys as the uninterrupted run, no duplicates, in every table; equal documents.
    for folder, columns, key in (
        ("documents", ["user_id", "content_hash"], ["user_id", "content_hash"]),
        ("teacher_samples", ["teacher", "user_id", "sample"], ["teacher", "user_id", "sample"]),
        ("votes", ["user_id", "attribute"], ["user_id", "attribute"]),
        (f"profiles/dt={DATE}", ["user_id"], ["user_id"]),
    ):
        a, b = _table(ref / folder, columns, key), _table(run / folder, columns, key)
        if folder == "teacher_samples":  # the reference's teacher took two samples per user; each teacher here one
            assert {r["sample"] for r in a} == {0, 1} and {r["teacher"] for r in a} == {"t"}
            a = [{**r, "teacher": name} for name in ("t", "t2") for r in a if r["sample"] == 0]
        assert a and a == b, folder
        keys = [tuple(r[k] for k in key) for r in b]
        assert len(keys) == len(set(keys)), f"duplicates in {folder}"
    final = _outputs(run)
    assert all(final[k] == text for k, text in before.items()), "rows labeled before the kill were changed"
    # the trained students, the report and the training logs are in the run directory on the object store
    assert (run / "models" / "sft" / "config.json").is_file() and (run / "models" / "rl" / "config.json").is_file()
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert {"teacher_vote", "student_rl"} <= set(metrics["stages"]) and (run / "report" / "index.html").is_file()
    assert any((run / "tensorboard" / "train_sft").rglob("events.out.tfevents.*"))
    published = _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
    assert pq.read_table(str(run / "profiles" / f"dt={DATE}")).num_rows == len(published)  # any reader takes the URI

    # Killed again, mid-inference this time (--from infer redoes that stage): nothing is half-published; the
    # plain command then finishes the run with the same profiles as before.
    redo = subprocess.Popen([*cmd, "--from", "infer"], cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    seen = threading.Event()

    def watch() -> None:  # the driver's log, read on a thread so that a silent driver cannot hang the test
        in_infer = False
        for line in redo.stderr:
            in_infer = in_infer or "pipeline: infer: running" in line
            if in_infer and "vLLMEngineStageUDF" in line:  # the engine has work
                seen.set()
                return

    threading.Thread(target=watch, daemon=True).start()
    seen.wait(timeout=900)
    _kill_session(redo)
    assert seen.is_set(), "not killed mid-inference"
    stages = read_manifest(run)["stages"]
    assert "infer" not in stages and "evaluate" not in stages and stages["train_rl"]["status"] == "ok"
    assert _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"]) == published  # the old partition, whole
    assert not [p for p in (run / "profiles").iterdir() if p.name != f"dt={DATE}"], "a half-written partition"
    finished = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1500)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "train_rl: already done" in finished.stderr and "infer: done" in finished.stderr
    again = _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
    assert again == published == _table(ref / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
    assert list(work.iterdir()) == [], "the run wrote to the local working directory"
