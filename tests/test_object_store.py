"""Run directories on an object store (conf_profile/fs.py, conf_profile/storage.py), against a local
S3-compatible server (conftest's s3_server: moto on 127.0.0.1): the paths, the writers (a file appears whole
or not at all, no temporary left behind), the run tables committed by the manifest, and the whole quick
pipeline with ``run.runs_root=s3://...``, killed mid-label and resumed."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import QUICK_DATE, TWO_TEACHERS, kill_session

from conf_profile import fs
from conf_profile.fs import ObjectPath, location
from conf_profile.storage import (
    DOCUMENTS,
    MissingInputError,
    TableWriter,
    check_reads,
    drop_derived,
    existing_run_dir,
    open_run_dir,
    parquet_files,
    read_manifest,
    record_stage,
    swap_folder,
    write_table_atomic,
    write_text_atomic,
)

ROOT = Path(__file__).resolve().parents[1]


def _root(s3_server) -> ObjectPath:
    """A fresh prefix of the bucket for one test."""
    return location(f"s3://runs/{secrets.token_hex(4)}")


def _keys(where: ObjectPath) -> list[str]:
    """Every object under ``where``, as paths below it."""
    infos = where.fs.get_file_info(pafs.FileSelector(where.path, recursive=True, allow_not_found=True))
    return sorted(i.path[len(where.path) + 1 :] for i in infos if i.type == pafs.FileType.File)


def test_object_paths_read_list_and_name_like_local_ones(s3_server) -> None:
    root = _root(s3_server)
    assert isinstance(root, ObjectPath) and str(root).startswith("s3://runs/")
    assert isinstance(location("runs/x"), Path) and location("file:///tmp/x") == Path("/tmp/x")
    run = root / "run"
    (run / "a" / "b.parquet").write_bytes(b"x")
    (run / "a" / "c.txt").write_text("hello")
    (run / "a" / "d" / "e.parquet").write_bytes(b"yy")
    assert (run / "a" / "c.txt").read_text() == "hello" and (run / "a" / "d" / "e.parquet").stat().st_size == 2
    assert (run / "a").is_dir() and (run / "a" / "c.txt").is_file() and not (run / "nothing").exists()
    assert sorted(p.name for p in (run / "a").iterdir()) == ["b.parquet", "c.txt", "d"]
    assert [p.name for p in (run / "a").glob("*.parquet")] == ["b.parquet"]
    assert [str(p.relative_to(run)) for p in run.glob("a/*/*.parquet")] == ["a/d/e.parquet"]
    assert sorted(p.name for p in run.rglob("*.parquet")) == ["b.parquet", "e.parquet"]
    leaf = run / "a" / "d" / "e.parquet"
    assert (leaf.name, leaf.stem, leaf.parent, leaf.with_name("f.json")) == (
        "e.parquet", "e", run / "a" / "d", run / "a" / "d" / "f.json")  # fmt: skip
    with pytest.raises(FileNotFoundError):
        (run / "missing.json").read_text()
    fs.remove(run / "a")
    assert not (run / "a").exists() and _keys(run) == []
    with pytest.raises(TypeError):  # no __fspath__: a local-only call fails instead of writing a folder "s3:"
        open(run / "x.json", "w")  # noqa: SIM115


def test_writers_leave_whole_files_and_no_temporaries(s3_server) -> None:
    run = _root(s3_server) / "run"
    write_text_atomic(run / "manifest.json", '{"a": 1}')
    table = pa.table({"user_id": ["u1", "u2"], "value": [1, 2]})
    write_table_atomic(table, run / "votes" / "votes.parquet")
    assert json.loads((run / "manifest.json").read_text()) == {"a": 1}
    assert fs.read_table(run / "votes") == table
    assert _keys(run) == ["manifest.json", "votes/votes.parquet"]

    # TableWriter: nothing at the target until commit (a hidden temporary meanwhile), then every piece.
    writer = TableWriter(run / "sft" / "train.parquet")
    writer.write(table)
    writer.write(table.slice(0, 1))
    assert not (run / "sft" / "train.parquet").exists()
    writer.commit()
    assert fs.read_table(run / "sft" / "train.parquet").num_rows == 3
    # an aborted writer (an exception inside the block) leaves the previous file as it was, and no temporary
    with pytest.raises(RuntimeError), TableWriter(run / "sft" / "train.parquet") as failing:
        failing.write(table.slice(0, 1))
        raise RuntimeError("the stage failed midway")
    assert fs.read_table(run / "sft" / "train.parquet").num_rows == 3
    assert _keys(run) == ["manifest.json", "sft/train.parquet", "votes/votes.parquet"]
    assert [p.name for p in parquet_files(run / "sft")] == ["train.parquet"]

    # A folder replaced by another: the old files go, the new ones are there, the temporary folder is gone.
    write_table_atomic(table, run / ".profiles.tmp" / "part-0.parquet")
    write_table_atomic(table, run / ".profiles.tmp" / "part-1.parquet")
    write_table_atomic(table, run / "profiles" / "old-part.parquet")
    swap_folder(run / ".profiles.tmp", run / "profiles")
    assert [k for k in _keys(run) if "profiles" in k] == ["profiles/part-0.parquet", "profiles/part-1.parquet"]


def test_run_tables_on_an_object_store_count_once_their_stage_is_recorded(s3_server) -> None:
    root = _root(s3_server)
    run = open_run_dir(None, str(root))  # a new run under the runs root, and `latest` naming it
    assert isinstance(run, ObjectPath) and (root / "latest").read_text().strip() == run.name
    assert existing_run_dir(None, str(root)) == run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        existing_run_dir(str(root / "no-such-run"))

    write_table_atomic(pa.table({"user_id": ["u1"]}), run / "documents" / "part-00001.parquet")
    assert not DOCUMENTS.present(run)  # files alone are not a table yet: ingest has not recorded "ok"
    with pytest.raises(MissingInputError, match="run ingest first"):
        check_reads("label", (DOCUMENTS,), run)
    record_stage(run, "ingest", {"status": "ok"})
    assert DOCUMENTS.present(run) and read_manifest(str(run))["stages"]["ingest"]["status"] == "ok"
    check_reads("label", (DOCUMENTS,), run)
    assert existing_run_dir(None, str(root)) == run  # the manifest makes it an existing run

    # a redo removes what side jobs wrote from the redone stages' outputs, on the object store too
    write_text_atomic(run / "report_test" / "metrics.json", "{}")
    record_stage(run, "evaluate_report_test", {"status": "ok", "written": ["report_test"]})
    assert drop_derived(run, ["ingest"]) == ["evaluate_report_test"]
    assert not (run / "report_test").exists() and "evaluate_report_test" not in read_manifest(run)["stages"]


def _outputs(run: ObjectPath) -> dict[tuple[str, str, int], str]:
    """(teacher, user, sample) -> the teacher's output, of the samples in the run."""
    rows = fs.read_table(run / "teacher_samples", columns=["teacher", "user_id", "sample", "raw_text"]).to_pylist()
    return {(r["teacher"], r["user_id"], r["sample"]): r["raw_text"] for r in rows}


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
@pytest.mark.fault
def test_the_quick_pipeline_on_an_object_store_resumes_after_its_driver_is_killed_mid_label(
    s3_server, quick_run, tmp_path
) -> None:
    """The whole quick pipeline with run.runs_root=s3://runs/<prefix>: killed (SIGKILL, with its local Ray)
    once the first labeled rows are on the object store, then the same command with --run-dir resumes it.
    Nothing is lost or duplicated: every table has the keys of the uninterrupted local run (conftest's
    quick_run), the rows labeled before the kill are kept, and nothing is written to the local disk."""
    root = _root(s3_server)
    # TWO_TEACHERS: the kill at the first labeled rows lands inside the label stage (conftest)
    cmd = [sys.executable, "-m", "jobs.pipeline", "--config", str(ROOT / "jobs" / "configs" / "quick.yaml"),
           "--set", f"run.runs_root={root}", "--set", f"models.cache_dir={quick_run.cache}", "--set", TWO_TEACHERS,
           "--set", f"infer.date={QUICK_DATE}"]  # fmt: skip
    work = tmp_path / "cwd"  # the jobs' working directory: nothing of the run may land there
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "killed.log"  # a file, not a pipe: nobody reads a pipe while the job runs, and a full one blocks
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, run = time.monotonic() + 900, None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            latest = root / "latest"
            if run is None and latest.is_file():
                run = root / latest.read_text().strip()
            if run is not None and any((run / "teacher_samples").rglob("*.parquet")):
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        kill_session(proc.pid)
    assert run is not None and proc.returncode == -signal.SIGKILL, log.read_text()[-3000:]
    stages = read_manifest(run)["stages"]
    assert stages["ingest"]["status"] == "ok" and "label" not in stages  # killed in label
    before = _outputs(run)
    assert before and {teacher for teacher, _, _ in before} == {"t"}  # the first teacher's rows only: mid-stage

    resumed = subprocess.run([*cmd, "--run-dir", str(run)], cwd=work, env=env, capture_output=True, text=True,
                             timeout=1500)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "ingest: already done" in resumed.stderr and f"({len(before)} already done)" in resumed.stderr
    assert list(work.iterdir()) == [], "the run wrote to the local working directory"
    stages = read_manifest(run)["stages"]
    assert all(stages[s]["status"] == "ok" for s in ("label", "aggregate", "train_sft", "train_rl", "infer"))

    ref = quick_run.run_dir

    def keys(folder: Path | ObjectPath, columns: list[str]) -> list[tuple]:
        rows = fs.read_table(folder, columns=columns).to_pylist()
        return sorted(tuple(r[c] for c in columns) for r in rows)

    for folder, columns in (("documents", ["user_id", "content_hash"]), ("votes", ["user_id", "attribute"]),
                            (f"profiles/dt={QUICK_DATE}", ["user_id"])):  # fmt: skip
        mine = keys(run / folder, columns)
        assert mine and mine == keys(ref / folder, columns), folder
        assert len(mine) == len(set(mine)), f"duplicates in {folder}"
    samples = keys(run / "teacher_samples", ["teacher", "user_id", "sample"])
    ref_samples = keys(ref / "teacher_samples", ["teacher", "user_id", "sample"])  # teacher t, two samples
    assert {k[0] for k in ref_samples} == {"t"} and {k[2] for k in ref_samples} == {0, 1}
    assert samples == sorted((name, *k[1:]) for name in ("t", "t2") for k in ref_samples if k[2] == 0)  # one each
    final = _outputs(run)
    assert all(final[k] == text for k, text in before.items()), "rows labeled before the kill were changed"
    # the trained students, the report and the training logs are in the run directory on the object store
    assert (run / "models" / "sft" / "config.json").is_file() and (run / "models" / "rl" / "config.json").is_file()
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert {"teacher_vote", "student_rl"} <= set(metrics["stages"]) and (run / "report" / "index.html").is_file()
    assert any((run / "tensorboard" / "train_sft").rglob("events.out.tfevents.*"))
    profiles = pq.read_table(str(run / "profiles" / f"dt={QUICK_DATE}"))  # any pyarrow reader takes the URI
    assert profiles.num_rows == len(keys(ref / f"profiles/dt={QUICK_DATE}", ["user_id"]))
