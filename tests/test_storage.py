from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.storage import (
    drop_derived,
    new_run_id,
    open_run_dir,
    read_manifest,
    record_stage,
    write_data_folder,
)


def test_new_run_dirs_and_latest_link(tmp_path) -> None:
    first = open_run_dir(None, tmp_path)
    second = open_run_dir(None, tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert os.readlink(tmp_path / "latest") == second.name
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    explicit = open_run_dir(tmp_path / "mine" / "run", tmp_path)
    assert explicit.is_dir() and os.readlink(tmp_path / "latest") == second.name


def test_run_ids_sort_by_time_and_are_unique() -> None:
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) == len("20261126-040512-a1b2c3d4") for i in ids)


def test_manifest_keeps_every_stage(tmp_path) -> None:
    assert read_manifest(tmp_path)["stages"] == {}
    record_stage(tmp_path, "a", {"rows": 1}, {"data": {"users": 2}})
    record_stage(tmp_path, "b", {"rows": 2})
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["stages"]["a"]["rows"] == 1 and manifest["stages"]["b"]["rows"] == 2
    assert manifest["config"] == {"data": {"users": 2}}
    assert "pyarrow" in manifest["versions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_drop_stages_forgets_every_named_stage(tmp_path) -> None:
    from conf_profile.storage import drop_stages

    for stage in ("label", "aggregate", "train_sft"):
        record_stage(tmp_path, stage, {"status": "ok"})
    drop_stages(tmp_path, ["aggregate", "label", "train_sft", "never_ran"])
    assert read_manifest(tmp_path)["stages"] == {}


def test_checkpoints_are_per_run_on_shared_storage(tmp_path) -> None:
    from conf_profile.storage import checkpoint_location

    assert checkpoint_location(None, tmp_path / "r1", "train_sft") == (str((tmp_path / "r1" / "checkpoints").resolve()),
                                                                      "train_sft")  # fmt: skip
    assert checkpoint_location("s3://b/ckpt", tmp_path / "r1", "train_sft") == ("s3://b/ckpt", "r1-train_sft")
    assert checkpoint_location("s3://b/ckpt", tmp_path / "r2", "train_sft")[1] == "r2-train_sft"
    # the folder of that pair, as pyarrow sees it (the snapshot keeper and a forced stage's clean-up use it)
    import pyarrow.fs as pafs

    from conf_profile.storage import checkpoint_folder

    filesystem, folder = checkpoint_folder(*checkpoint_location(None, tmp_path / "r1", "train_sft"))
    assert isinstance(filesystem, pafs.LocalFileSystem)
    assert folder == str((tmp_path / "r1" / "checkpoints" / "train_sft").resolve())


def test_a_data_folder_appears_whole_or_not_at_all(tmp_path) -> None:
    out = tmp_path / "data"

    def fill(staging):
        (staging / "logs" / "part-0.parquet").write_bytes(b"rows")
        return {"users": 3}

    assert write_data_folder(out, fill) == {"users": 3}
    assert json.loads((out / "dataset.json").read_text()) == {"users": 3}
    assert (out / "logs" / "part-0.parquet").read_bytes() == b"rows"
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_data_folder(out, fill)

    def broken(staging):
        (staging / "logs" / "part-0.parquet").write_bytes(b"half")
        raise ValueError("source line 7: bad row")

    with pytest.raises(ValueError, match="line 7"):
        write_data_folder(out, broken, overwrite=True)
    assert (out / "logs" / "part-0.parquet").read_bytes() == b"rows"  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no staging folder left
    write_data_folder(out, lambda staging: {"users": 0}, overwrite=True)
    assert list((out / "logs").iterdir()) == [] and json.loads((out / "dataset.json").read_text()) == {"users": 0}


def test_a_redo_drops_the_side_jobs_run_on_the_old_outputs(tmp_path) -> None:
    run = tmp_path / "run"
    for folder in ("predictions/ref_a", "predictions/student_rl", "report_test", "report"):
        (run / folder).mkdir(parents=True)
    (tmp_path / "keep").mkdir()
    record_stage(run, "infer", {"status": "ok", "written": ["report"]})  # a pipeline stage: left alone
    record_stage(run, "make_logs", {"status": "ok", "out": "data"})  # upstream of the run, no outputs
    record_stage(run, "references", {"status": "ok", "written": ["predictions/ref_a"]})
    record_stage(run, "evaluate_report_test", {"status": "ok", "written": ["report_test", "../keep", "."]})
    assert drop_derived(run, ["infer", "evaluate"]) == ["evaluate_report_test", "references"]
    assert set(read_manifest(run)["stages"]) == {"infer", "make_logs"}
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["student_rl"]
    assert not (run / "report_test").exists() and (run / "report").is_dir()
    assert (tmp_path / "keep").is_dir() and run.is_dir()  # nothing outside the run directory, nor the run itself
    assert drop_derived(run, ["infer", "evaluate"]) == []


def test_every_stage_reads_only_tables_an_earlier_stage_writes() -> None:
    """The declared data flow runs one way, and each table's producer is the stage that declares it."""
    from conf_profile import runner

    written: set[str] = set()
    for name, module in zip(runner.STAGE_NAMES, runner.MODULES, strict=True):
        for table in module.READS:
            assert table.name in written, f"{name} reads {table.name}, which no earlier stage writes"
        for table in module.WRITES:
            assert table.producer == name, f"{table.name} is declared by {name}, its producer says {table.producer}"
            written.add(table.name)
    assert {"documents", "teacher_samples", "votes", "sft", "rl", "models/sft", "profiles"} <= written


def test_a_missing_input_names_the_job_that_writes_it(tmp_path) -> None:
    from conf_profile.runner import run_checked
    from conf_profile.storage import MODEL_SFT, RL, MissingInputError

    ran = []
    with pytest.raises(MissingInputError, match=r"train_rl reads rl .*run aggregate first \(python -m jobs.aggregate"):
        run_checked("train_rl", (RL, MODEL_SFT), lambda cfg, rd: ran.append(rd) or {}, None, tmp_path)
    (tmp_path / "rl").mkdir()  # a folder is swapped in whole: there means complete, even when empty
    with pytest.raises(MissingInputError, match="reads models/sft .*run train_sft first"):
        run_checked("train_rl", (RL, MODEL_SFT), lambda cfg, rd: ran.append(rd) or {}, None, tmp_path)
    (tmp_path / "models" / "sft").mkdir(parents=True)  # a model folder counts once its config is written
    with pytest.raises(MissingInputError):
        run_checked("train_rl", (RL, MODEL_SFT), lambda cfg, rd: ran.append(rd) or {}, None, tmp_path)
    (tmp_path / "models" / "sft" / "config.json").write_text("{}")
    assert run_checked("train_rl", (RL, MODEL_SFT), lambda cfg, rd: ran.append(rd) or {"ok": 1}, None, tmp_path) == {
        "ok": 1
    }
    assert ran == [tmp_path]


def test_the_pipeline_checks_a_stages_inputs_before_running_it(tmp_path) -> None:
    """A run whose ingest output was deleted stops at label with the fix, and records the failure."""
    from conf_profile.core.settings import Config
    from conf_profile.runner import run_pipeline
    from conf_profile.storage import MissingInputError

    ran: list[str] = []
    stages = (
        ("ingest", lambda cfg, rd: ran.append("ingest") or {}),
        ("label", lambda cfg, rd: ran.append("label") or {}),
    )
    with pytest.raises(MissingInputError, match="label reads documents .*run ingest first"):
        run_pipeline(Config(), tmp_path, stages)
    assert ran == ["ingest"]
    assert read_manifest(tmp_path)["stages"]["label"]["status"] == "failed"


def test_the_pipeline_starts_ray_with_its_dashboard_when_a_training_stage_is_to_run(tmp_path, monkeypatch) -> None:
    """Ray Train needs the state API a local Ray's dashboard serves, and the first stage starts the Ray that
    the training stages use: the pipeline starts it, with the dashboard, when a training stage will run."""
    from conf_profile import runner
    from conf_profile.core.settings import Config

    calls: list[bool] = []
    monkeypatch.setattr(runner, "init_ray", lambda cfg=None, dashboard=False: calls.append(dashboard))  # test double
    monkeypatch.setattr(runner, "READS", {})
    stages = tuple((name, lambda cfg, rd: {}) for name in ("ingest", "label", "train_sft", "train_rl", "infer"))

    runner.run_pipeline(Config(), tmp_path / "a", stages, last="label")  # no training: the stages start their Ray
    assert calls == []
    runner.run_pipeline(Config(), tmp_path / "a", stages)  # train_sft and train_rl are to run
    assert calls == [True]
    runner.run_pipeline(Config(), tmp_path / "a", stages)  # all done: no Ray at all
    runner.run_pipeline(Config(), tmp_path / "a", stages, first="infer")  # the training stages stay done
    assert calls == [True]
    runner.run_pipeline(Config(), tmp_path / "a", stages, first="train_rl", last="train_rl")
    assert calls == [True, True]


def test_a_lease_is_exclusive_released_on_exit_and_taken_over_from_a_dead_holder(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    from conf_profile.storage import LeaseHeld, lease

    path = tmp_path / "store" / ".lease"
    with lease(path, {"job": "a"}):
        held = json.loads(path.read_text())
        assert held["job"] == "a" and held["pid"] == os.getpid()
        with pytest.raises(LeaseHeld, match='held by .*"job": "a"'), lease(path, {"job": "b"}):
            pass
        assert path.exists()  # the refused one did not remove the holder's lease
    assert not path.exists()
    with pytest.raises(RuntimeError, match="boom"), lease(path, {"job": "c"}):
        raise RuntimeError("boom")
    assert not path.exists()  # released when the holder fails too

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({"job": "old", "pid": int(dead.stdout), "host": socket.gethostname()}))
    with lease(path, {"job": "d"}):  # its holder is gone: taken over
        assert json.loads(path.read_text())["job"] == "d"
    assert sorted(p.name for p in path.parent.iterdir()) == []
    path.write_text(json.dumps({"job": "remote", "pid": int(dead.stdout), "host": "another-host"}))
    with pytest.raises(LeaseHeld, match="remove .*lease"), lease(path, {"job": "e"}):
        pass  # a holder on another machine cannot be checked here: never taken over


def test_table_writer_commits_whole_files_or_nothing(tmp_path) -> None:
    from conf_profile.storage import TableWriter

    target = tmp_path / "t" / "x.parquet"
    with TableWriter(target) as w:
        w.write(pa.table({"a": [1, 2], "b": ["x", None]}))
        w.write(pa.table({"b": pa.nulls(1, pa.null()), "a": [3]}))  # other column order, a null-typed column
        assert not target.exists()  # nothing visible before the commit
        w.commit()
    assert pq.read_table(target).to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": None}, {"a": 3, "b": None}]
    with pytest.raises(RuntimeError), TableWriter(target) as w:
        w.write(pa.table({"a": [9], "b": ["new"]}))
        raise RuntimeError("stage failed")
    assert pq.read_table(target).num_rows == 3 and sorted(p.name for p in target.parent.iterdir()) == ["x.parquet"]
    empty = TableWriter(tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="no schema"):
        empty.commit()
    empty.commit(pa.schema([("a", pa.int64())]))
    assert pq.read_table(tmp_path / "e.parquet").schema.names == ["a"]


def test_partition_by_user_keeps_every_row_once_in_its_users_bucket(tmp_path) -> None:
    from conf_profile.core.ingest import bucket_of
    from conf_profile.storage import bucket_folder, parquet_files, partition_by_user

    src = tmp_path / "src"
    (src / "part-a").mkdir(parents=True)
    pq.write_table(
        pa.table({"user_id": [f"u{i}" for i in range(50)], "v": list(range(50))}), src / "part-a" / "0.parquet"
    )
    pq.write_table(pa.table({"user_id": ["u1", "u77"], "v": [100, 101], "w": ["x", "y"]}), src / "1.parquet")
    pq.write_table(pa.table({"user_id": ["hidden"], "v": [0]}), src / ".tmp.parquet")  # a writer's temp file
    (src / "_staging").mkdir()
    pq.write_table(pa.table({"user_id": ["staged"], "v": [0]}), src / "_staging" / "2.parquet")
    files = parquet_files(src)
    assert [f.relative_to(src).as_posix() for f in files] == ["1.parquet", "part-a/0.parquet"]
    counts = partition_by_user(files, None, 4, tmp_path / "out", batch_rows=7)
    rows = []
    for b in range(4):
        path = bucket_folder(tmp_path / "out", b)
        part = pq.read_table(path).to_pylist() if path.exists() else []
        assert len(part) == counts[b] and all(bucket_of(r["user_id"], 4) == b for r in part)
        rows += part
    assert sorted(r["v"] for r in rows) == [*range(50), 100, 101]  # every row once
    assert {r["w"] for r in rows} == {None, "x", "y"}  # the column one file lacks is null there
    # a buffer of 0 bytes writes every input batch's rows as new part files: the same rows, in input order
    small = partition_by_user(files, None, 4, tmp_path / "small", batch_rows=7, buffer_mb=0)
    assert small == counts
    for b in range(4):
        folder = bucket_folder(tmp_path / "small", b)
        if counts[b]:
            assert len(list(folder.glob("part-*.parquet"))) > 1 or counts[b] <= 7
            assert pq.read_table(folder).to_pylist() == pq.read_table(bucket_folder(tmp_path / "out", b)).to_pylist()
        else:
            assert not folder.exists()
    ids = partition_by_user(files, ["user_id"], 2, tmp_path / "ids")
    assert sum(ids) == 52 and pq.read_table(tmp_path / "ids").column_names == ["user_id"]


def test_importing_the_package_first_picks_pyarrows_jemalloc_pool() -> None:
    """conf_profile/__init__.py sets ARROW_DEFAULT_MEMORY_POOL before pyarrow loads (docs/architecture.md 3);
    a value the user already set wins."""
    import subprocess
    import sys

    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow build has no jemalloc")
    code = "import conf_profile, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    picked = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert picked.stdout.strip() == "jemalloc"
    kept = subprocess.run([sys.executable, "-c", code], env={**env, "ARROW_DEFAULT_MEMORY_POOL": "system"},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert kept.stdout.strip() == "system"
