"""Ingest through the real Ray Data job (local Ray), against the generator's injected bad rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conf_profile.bench.ingest_local import run_ingest_local
from conf_profile.core.settings import IngestConfig
from conf_profile.stages.ingest import run_ingest
from conf_profile.synthetic.dataset import write_dataset
from conf_profile.synthetic.generator import BAD_KINDS

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray  # the Ray ingest job, or its CLI


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")  # its own Ray
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def logs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ingest") / "data"
    write_dataset(out, users=400, seed=3, bad_fraction=0.05, files=3)
    return out


@pytest.fixture(scope="module")
def ingested(ray_local, logs, tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("run")
    entry = run_ingest(IngestConfig(buckets=4), str(logs / "logs"), run_dir)
    return run_dir, entry


def _docs(run_dir: Path) -> list[dict]:
    t = pq.read_table(run_dir / "documents")
    return t.take(pc.sort_indices(t, [("user_id", "ascending")])).to_pylist()


def _rejects(run_dir: Path) -> list[tuple]:
    t = pq.read_table(run_dir / "rejects")
    rows = zip(
        t.column("reason").to_pylist(), t.column("user_id").to_pylist(), t.column("event_id").to_pylist(), strict=True
    )
    return sorted(rows, key=lambda r: tuple(x or "" for x in r))


def test_conservation_of_rows_and_users(ingested, logs) -> None:
    run_dir, entry = ingested
    rows_in = ds.dataset(logs / "logs").count_rows()
    users_in = pq.read_table(logs / "truth.parquet").num_rows
    docs, rejects = _docs(run_dir), _rejects(run_dir)
    row_rejects = [r for r in rejects if r[0] != "no_usable_events"]
    user_rejects = [r for r in rejects if r[0] == "no_usable_events"]
    assert entry["rows_read"] == rows_in == sum(d["n_events"] for d in docs) + len(row_rejects)
    assert entry["rows_used"] + entry["rows_rejected"] == rows_in
    assert entry["users_in"] == users_in == len(docs) + len(user_rejects)
    assert len({d["user_id"] for d in docs}) == len(docs)
    assert entry["users_out"] == len(docs) and entry["buckets"] == 4


def test_every_injected_bad_row_is_rejected_with_its_own_reason(ingested, logs) -> None:
    run_dir, entry = ingested
    injected = dict(zip(*pq.read_table(logs / "bad_rows.parquet").to_pydict().values(), strict=True))
    assert set(injected.values()) == set(BAD_KINDS)
    by_event = {eid: reason for reason, _, eid in _rejects(run_dir) if eid}
    for event_id, kind in injected.items():
        assert by_event[event_id] == kind, event_id
    assert set(BAD_KINDS) <= set(entry["rows_rejected_by_reason"])
    raw = pq.read_table(run_dir / "rejects").filter(pc.field("reason") == "wrong_type").column("raw")[0].as_py()
    assert json.loads(raw)["event_type"] == "watch"  # the original row is kept


def test_documents_are_bounded_and_have_their_columns(ingested) -> None:
    run_dir, _ = ingested
    cfg = IngestConfig()
    for doc in _docs(run_dir):
        assert doc["document"] and doc["est_tokens"] <= cfg.token_budget
        assert doc["first_event_time"] <= doc["last_event_time"]
        assert doc["n_events"] == sum(doc[f"events_{s}"] for s in ("profile", "comment", "search", "watch", "follow"))
        assert "<" not in doc["document"]


def test_ray_job_equals_the_single_process_baseline(ingested, logs, tmp_path) -> None:
    run_dir, entry = ingested
    local_entry = run_ingest_local(IngestConfig(), str(logs / "logs"), tmp_path)
    assert _docs(tmp_path) == _docs(run_dir)
    assert _rejects(tmp_path) == _rejects(run_dir)
    for key in ("rows_read", "rows_used", "rows_rejected_by_reason", "users_in", "users_out", "users_rejected"):
        assert local_entry[key] == entry[key], key


def _object_or_text(payload: str):
    try:
        return json.loads(payload)
    except ValueError:
        return payload


def test_new_files_with_the_stored_events_build_the_documents_of_a_full_read(ray_local, logs, ingested, tmp_path):
    """The nightly refresh's ingest: the first file alone keeps its valid events; the other two files with
    those events (asked for the users in them) give each of their users the document the full read gives."""
    from conf_profile.log_input import resolve_input

    listed = resolve_input(str(logs / "logs"))
    assert len(listed.paths) == 3 and listed.only(set()).paths == () and listed.only(set()).total_bytes == 0
    first, rest = listed.only({listed.paths[0]}), listed.only(set(listed.paths[1:]))
    assert rest.paths == listed.paths[1:] and rest.total_bytes == sum(listed.sizes[1:]) and len(rest.mtimes_ns) == 2
    old = run_ingest(IngestConfig(buckets=4), "logs", tmp_path / "a", log_input=first,
                     events_out=tmp_path / "a.parquet")  # fmt: skip
    stored = pq.read_table(tmp_path / "a.parquet")
    duplicates = old["rows_rejected_by_reason"].get("duplicate_event", 0)  # valid rows, found twice in pass 2
    assert stored.num_rows == old["rows_read"] - old["rows_rejected"] + duplicates == old["events_kept"]
    asked = []

    def prior(users: pa.Array) -> pa.Table:  # a stand-in for the store: the stored events of the users
        asked.append(set(users.to_pylist()))
        return stored.filter(pc.is_in(stored.column("user_id"), value_set=users))

    new = run_ingest(IngestConfig(buckets=3), "logs", tmp_path / "b", log_input=rest, prior=prior,
                     events_out=tmp_path / "b.parquet")  # fmt: skip
    rest_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in rest.paths)
    assert new["rows_read"] == rest_rows  # the new files' rows: the stored events are counted apart
    users_in_rest = set(ds.dataset(list(rest.paths)).to_table(columns=["user_id"]).column("user_id").to_pylist())
    assert len(asked) == 1 and asked[0] <= users_in_rest  # the ids of the new files' rows, once
    assert (
        new["prior_events"] == stored.filter(pc.is_in(stored.column("user_id"), value_set=pa.array(asked[0]))).num_rows
    )
    full = {d["user_id"]: d for d in _docs(ingested[0])}
    rebuilt = _docs(tmp_path / "b")
    assert rebuilt and all(d == full[d["user_id"]] for d in rebuilt)
    assert {d["user_id"] for d in rebuilt} == {u for u in users_in_rest if u in full}
    # the events kept tonight: the new files' valid events not stored already (a redelivery is kept once)
    kept = pq.read_table(tmp_path / "b.parquet")
    from conf_profile.stages.ingest import event_key

    assert new["events_kept"] == kept.num_rows > 0
    assert not set(event_key(kept).to_pylist()) & set(event_key(stored).to_pylist())


def test_jsonl_input_with_malformed_lines(ray_local, logs, tmp_path) -> None:
    rows = ds.dataset(logs / "logs").to_table().slice(0, 600).to_pylist()
    folder = tmp_path / "jsonl"
    folder.mkdir()
    lines = [json.dumps(r) for r in rows[:300]]
    lines += [json.dumps({**r, "payload": _object_or_text(r["payload"])}) for r in rows[300:]]  # objects too
    lines += ["{this is not json", "", "[1, 2, 3]"]
    (folder / "a.jsonl").write_text("\n".join(lines[:400]) + "\n")
    (folder / "b.jsonl").write_text("\n".join(lines[400:]) + "\n")
    entry = run_ingest(IngestConfig(), str(folder), tmp_path / "run")
    assert entry["format"] == "jsonl" and entry["rows_read"] == 602  # the blank line is not a row
    assert entry["rows_rejected_by_reason"]["malformed_row"] == 2
    assert entry["rows_used"] + entry["rows_rejected"] == entry["rows_read"]


def test_partly_unreadable_input_rejects_the_file_and_reads_the_rest(ray_local, logs, tmp_path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    first = sorted((logs / "logs").glob("*.parquet"))[0]
    (folder / "good.parquet").write_bytes(first.read_bytes())
    (folder / "broken.parquet").write_bytes(b"this is not parquet at all")
    entry = run_ingest(IngestConfig(), str(folder), tmp_path / "run")
    assert entry["files_unreadable"] == 1 and entry["files"] == 1
    assert entry["rows_read"] == pq.read_metadata(first).num_rows
    rejects = pq.read_table(tmp_path / "run" / "rejects").filter(pc.field("reason") == "unreadable_file")
    assert "broken.parquet" in rejects.column("raw")[0].as_py()


def test_bad_input_corpus_conserves_every_row_and_user(ray_local, tmp_path) -> None:
    """Wrong column types, empty files, one user with 100k events, a user whose only row is bad, gigantic
    and invalid-unicode text, duplicates and clock skew, in one folder: nothing crashes, every row is used or
    rejected with a reason, every user ends in documents or rejects."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    ok = lambda i, uid, **kw: {"event_id": f"e{uid}-{i}", "user_id": uid, "event_time": "2026-02-01T10:00:00Z",  # noqa: E731
                               "event_type": "search", "payload": json.dumps({"query": f"q {i}"}), **kw}  # fmt: skip
    heavy = [ok(i, "heavy", event_time=f"2026-02-{1 + i % 28:02d}T{i % 24:02d}:00:00Z") for i in range(100_000)]
    pq.write_table(pa.Table.from_pylist(heavy), folder / "heavy.parquet")
    odd = [ok(0, "fine"), ok(0, "fine"),  # duplicate delivery
           ok(1, "only_bad", event_time="not a time"),  # this user's only row
           ok(2, "fine", payload=json.dumps({"query": "x" * 50_000})),  # gigantic text
           ok(3, "fine", payload=json.dumps({"query": "broken \udcff surrogate"})),
           ok(4, "fine", event_time="2099-01-01T00:00:00Z")]  # clock skew  # fmt: skip
    pq.write_table(pa.Table.from_pylist(odd), folder / "odd.parquet")
    typed = pa.table({"event_id": [1, 2], "user_id": [7, 8], "event_time": pa.array([1_767_225_600_000] * 2),
                      "event_type": ["search", "watch"], "payload": ['{"query": "ints"}', '{"title": 5}']})  # fmt: skip
    pq.write_table(typed, folder / "typed.parquet")  # integer ids and epoch-ms times: other column types
    pq.write_table(pa.Table.from_pylist(heavy[:1]).schema.empty_table(), folder / "empty.parquet")
    entry = run_ingest(IngestConfig(), str(folder), tmp_path / "run")
    assert entry["rows_read"] == 100_000 + len(odd) + 2
    assert entry["rows_used"] + entry["rows_rejected"] == entry["rows_read"]
    reasons = entry["rows_rejected_by_reason"]
    assert {"duplicate_event", "bad_timestamp", "oversize_text", "timestamp_out_of_range"} <= set(reasons)
    docs = pq.read_table(tmp_path / "run" / "documents")
    rejected = pq.read_table(tmp_path / "run" / "rejects").to_pylist()
    users = set(docs.column("user_id").to_pylist())
    lost = {"heavy", "fine", "only_bad", "7", "8"} - users - {r["user_id"] for r in rejected if r["reason"] ==
                                                               "no_usable_events"}  # fmt: skip
    assert not lost, lost
    heavy_doc = next(d for d in docs.to_pylist() if d["user_id"] == "heavy")
    assert heavy_doc["n_events"] == 100_000 and heavy_doc["est_tokens"] <= IngestConfig().token_budget


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobs.ingest", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_job_exits_0_with_a_summary_and_a_manifest_entry(logs, tmp_path) -> None:
    res = _job("--logs", str(logs / "logs"), "--run-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    manifest = json.loads((tmp_path / "manifest.json").read_text())["stages"]["ingest"]
    assert manifest["users_out"] == summary["users_out"] > 0 and manifest["status"] == "ok"
    assert not (tmp_path / "_staging").exists()


def test_wholly_unreadable_input_fails_with_a_clear_message(tmp_path) -> None:
    (tmp_path / "junk.parquet").write_bytes(b"\x00garbage")
    res = _job("--logs", str(tmp_path), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "no readable parquet file" in res.stderr and "junk.parquet" in res.stderr
    res = _job("--logs", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "no such file or folder" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _job("--logs", str(tmp_path / "empty"), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2 and "no .parquet, .jsonl or .csv files" in res.stderr
