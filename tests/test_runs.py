from __future__ import annotations

import json
import os

import pytest

from conf_profile.runs import (
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
    assert all(len(i) == len("20261126-040512-a1b2") for i in ids)


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
    from conf_profile.runs import drop_stages

    for stage in ("label", "aggregate", "train_sft"):
        record_stage(tmp_path, stage, {"status": "ok"})
    drop_stages(tmp_path, ["aggregate", "label", "train_sft", "never_ran"])
    assert read_manifest(tmp_path)["stages"] == {}


def test_checkpoints_are_per_run_on_shared_storage(tmp_path) -> None:
    from conf_profile.runs import checkpoint_location

    assert checkpoint_location(None, tmp_path / "r1", "train_sft") == (str((tmp_path / "r1" / "checkpoints").resolve()),
                                                                      "train_sft")  # fmt: skip
    assert checkpoint_location("s3://b/ckpt", tmp_path / "r1", "train_sft") == ("s3://b/ckpt", "r1-train_sft")
    assert checkpoint_location("s3://b/ckpt", tmp_path / "r2", "train_sft")[1] == "r2-train_sft"


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
