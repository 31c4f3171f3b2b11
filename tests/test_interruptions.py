"""Interruptions: the pipeline driver is killed (SIGKILL, with its local Ray) in the middle of labeling, and
later in the middle of inference; the same command again resumes, and the final tables hold the same users
and keys as an uninterrupted run's, without duplicates or gaps. Documents are deterministic and must be
equal; the rows labeled before the kill are kept as they were.

The uninterrupted run is conftest's `quick_run` (the end-to-end test's run, same data and stages). This run
labels with one greedy sample per user instead of its two, by two teachers one after the other: each
teacher's sample keys are compared with its sample 0 (the keys of documents, votes and profiles do not
depend on the number of samples or teachers). The stage writes a teacher's rows when its engine is done with
them, so the kill, at the first teacher's first rows, lands while the second teacher's engine starts: inside
the stage, whatever the timing."""

from __future__ import annotations

import json
import os
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

ROOT = Path(__file__).resolve().parents[1]


def _cmd(run_dir: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "jobs.pipeline", "--config", "jobs/configs/quick.yaml", "--run-dir", str(run_dir),
            "--set", f"models.cache_dir={cache}", "--set", TWO_TEACHERS, "--set", f"infer.date={DATE}"]  # fmt: skip


def _kill_session(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of the Ray it started, as a lost machine would. Ray's workers have
    process groups of their own (a killpg alone leaves them to die a moment later, and one may still finish
    writing a file then), but they share the driver's session: kill every live process of it."""
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    kill_session(driver.pid)


def _readable_rows(folder: Path) -> dict[tuple[str, str, int], str]:
    """(teacher, user, sample) -> output of the files the kill left readable (a file cut short is labeled
    again)."""
    rows = {}
    for path in folder.rglob("*.parquet"):
        try:
            table = pq.read_table(path, columns=["teacher", "user_id", "sample", "raw_text"])
        except Exception:
            continue
        rows.update({(r["teacher"], r["user_id"], r["sample"]): r["raw_text"] for r in table.to_pylist()})
    return rows


def _table(path: Path, columns: list[str], sort: list[str]) -> list[dict]:
    return pq.read_table(path, columns=columns).sort_by([(c, "ascending") for c in sort]).to_pylist()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
@pytest.mark.fault
def test_a_killed_pipeline_resumes_and_ends_with_the_uninterrupted_tables(tmp_path, quick_run) -> None:
    assert quick_run.submit.returncode == 0, (quick_run.submit.stdout + quick_run.submit.stderr)[-3000:]
    ref, cache = quick_run.run_dir, quick_run.cache

    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run, cache), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip
    labeling = threading.Event()

    def watch() -> None:  # the driver's log, read on a thread so that the file system is polled meanwhile
        for line in proc.stderr:
            if "pipeline: label: running" in line:
                labeling.set()

    threading.Thread(target=watch, daemon=True).start()
    killed_in = None
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:  # kill once the first labeled rows are on disk
        if labeling.is_set() and list((run / "teacher_samples").rglob("*.parquet")):
            killed_in = "label"
            break
        time.sleep(0.05)
    _kill_session(proc)
    assert killed_in == "label"
    manifest = json.loads((run / "manifest.json").read_text())
    assert "label" not in manifest["stages"] and manifest["stages"]["ingest"]["status"] == "ok"
    before = _readable_rows(run / "teacher_samples")
    assert {teacher for teacher, _, _ in before} == {"t"}  # the first teacher's rows only: mid-stage
    done_before = len(before)

    resumed = subprocess.run(_cmd(run, cache), cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ingest: already done" in resumed.stderr  # completed work is not redone
    assert f"({done_before} already done)" in resumed.stderr  # labeled rows are kept, only the rest is labeled

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
    final = {(r["teacher"], r["user_id"], r["sample"]): r["raw_text"] for r in _table(run / "teacher_samples",
             ["teacher", "user_id", "sample", "raw_text"], ["teacher", "user_id", "sample"])}  # fmt: skip
    assert all(final[k] == text for k, text in before.items()), "rows labeled before the kill were changed"

    # Killed again, mid-inference this time (--from infer redoes that stage): nothing is half-published; the
    # plain command then finishes the run with the same profiles as before.
    published = _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
    redo = subprocess.Popen([*_cmd(run, cache), "--from", "infer"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    in_infer = engine_seen = False
    deadline = time.monotonic() + 900
    for line in redo.stderr:
        in_infer = in_infer or "pipeline: infer: running" in line
        engine_seen = in_infer and "vLLMEngineStageUDF" in line  # the engine has work
        if engine_seen or time.monotonic() > deadline:
            break
    _kill_session(redo)
    assert engine_seen, "not killed mid-inference"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert "infer" not in stages and "evaluate" not in stages and stages["train_rl"]["status"] == "ok"
    assert _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"]) == published  # the old partition, whole
    assert not [p for p in (run / "profiles").iterdir() if p.name != f"dt={DATE}"], "a half-written partition"
    finished = subprocess.run(_cmd(run, cache), cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "train_rl: already done" in finished.stderr and "infer: done" in finished.stderr
    again = _table(run / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
    assert again == published == _table(ref / f"profiles/dt={DATE}", ["user_id"], ["user_id"])
