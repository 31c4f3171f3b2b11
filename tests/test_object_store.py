"""Run directories on an object store (conf_profile/fs.py, conf_profile/storage.py), against a local
S3-compatible server (conftest's s3_server: moto on 127.0.0.1): the paths, the writers (a file appears whole
or not at all, no temporary left behind), and the run tables committed by the manifest. The whole quick
pipeline on an object store, killed mid-label and mid-inference and resumed, is tests/test_interruptions.py."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

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


def _keys(where: Path | ObjectPath) -> list[str]:
    """Every file (object) under ``where``, as paths below it."""
    if isinstance(where, Path):
        return sorted(str(p.relative_to(where)) for p in where.rglob("*") if p.is_file())
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


@pytest.mark.parametrize("store", ["local", "s3"])
def test_writers_leave_whole_files_and_no_temporaries(store, request, tmp_path) -> None:
    """The same writers on a local disk (renames) and on the object store (copies)."""
    run = (tmp_path if store == "local" else _root(request.getfixturevalue("s3_server"))) / "run"
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
