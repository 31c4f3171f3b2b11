"""The nightly refresh: the pure decisions (watermark, gates) and the job on the tiny model across nights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from conf_profile.core.nightly import (
    INPUT_FILES_SCHEMA,
    WatermarkError,
    changed_mask,
    check_gates,
    drift,
    file_listing,
    full_read_reason,
    ingest_settings_hash,
    new_files,
    next_state,
    partition_stats,
    watermark_since,
)

ROOT = Path(__file__).resolve().parents[1]
GATES = {"max_parse_failure_rate": 0.1, "max_abstain_rate": 0.9, "max_drift": 0.3, "min_users_for_drift": 2}


def test_stats_count_parse_failures_per_user_and_abstentions_per_parsed_cell() -> None:
    rows = [{"error": None, "a": "x", "b": "unknown"}, {"error": None, "a": "y", "b": "unknown"},
            {"error": "not_json", "a": "unknown", "b": "unknown"}]  # fmt: skip
    stats = partition_stats(rows, ("a", "b"))
    assert stats["users"] == 3 and stats["parse_failure_rate"] == 0.3333 and stats["abstain_rate"] == 0.5
    assert stats["distribution"] == {"a": {"x": 0.5, "y": 0.5}, "b": {"unknown": 1.0}}
    assert partition_stats([], ("a",)) == {"users": 0, "parse_failure_rate": 0.0, "abstain_rate": 0.0,
                                           "distribution": {"a": {}}}  # fmt: skip


def test_drift_is_the_largest_total_variation_over_shared_attributes() -> None:
    assert drift({"a": {"x": 1.0}}, {"a": {"x": 1.0}}) == (0.0, None)
    assert drift({"a": {"x": 0.6, "y": 0.4}, "b": {"z": 1.0}}, {"a": {"x": 0.4, "y": 0.6}, "b": {"w": 1.0}}) == (
        1.0,
        "b",
    )
    assert drift({"a": {"x": 1.0}}, {"c": {"x": 1.0}}) == (0.0, None)  # nothing in common: no evidence of drift


def test_gates_pass_fail_and_skip_drift_on_small_partitions() -> None:
    ok = {"users": 10, "parse_failure_rate": 0.1, "abstain_rate": 0.9, "distribution": {"a": {"x": 1.0}}}
    assert check_gates(ok, None, **GATES) == []  # at the thresholds: pass
    bad = {**ok, "parse_failure_rate": 0.2, "abstain_rate": 0.95, "distribution": {"a": {"y": 1.0}}}
    assert check_gates(bad, ok, **GATES) == ["parse-failure rate 0.200 > 0.100", "abstain rate 0.950 > 0.900",
                                             "label drift 1.000 > 0.300 (attribute a)"]  # fmt: skip
    assert check_gates({**bad, "users": 1}, ok, **GATES)[-1].startswith("abstain")  # 1 user < 2: no drift gate
    assert check_gates({**bad, "users": 0}, ok, **GATES) == []  # a night without new activity publishes nothing new


def test_watermark_selection_for_next_same_and_earlier_dates() -> None:
    state = {"date": "2026-11-02", "last_event_time": "2026-11-02T20:00:00+00:00", "since": None}
    assert watermark_since(None, "2026-11-01") is None
    assert watermark_since(state, "2026-11-03") == "2026-11-02T20:00:00+00:00"
    assert watermark_since(state, "2026-11-02") is None  # the same date again: the same starting point
    with pytest.raises(WatermarkError, match="before the last published date"):
        watermark_since(state, "2026-11-01")


def test_changed_users_are_new_or_have_another_document_or_model() -> None:
    docs = pa.table({"user_id": ["a", "b", "c", "d", "e"], "content_hash": ["h1", "h2", "h3", "h4", None]})
    state = pa.table({"user_id": ["e", "c", "b", "a", "gone"], "content_hash": ["h5", "h3", "old", "h1", "h9"],
                      "model": ["m", "m2", "m", "m", "m"]})  # fmt: skip
    assert changed_mask(docs, state, "m").to_pylist() == [False, True, True, True, True]  # order of docs kept
    assert changed_mask(docs, None, "m").to_pylist() == [True] * 5  # the first night: everyone
    assert changed_mask(docs, state.slice(0, 0), "m").to_pylist() == [True] * 5
    assert changed_mask(docs.slice(0, 0), state, "m").to_pylist() == []


def test_the_next_state_keeps_the_previous_entry_of_a_user_whose_output_failed() -> None:
    prev = pa.table({"user_id": ["a", "b", "c"], "content_hash": ["1", "2", "3"], "model": ["m", "m", "m"]})
    night = pa.table({"user_id": ["c", "b", "z"], "content_hash": ["3b", "2b", "9"], "model": ["m2"] * 3,
                      "error": ["not_json", None, None], "gender": ["x", "y", "z"]})  # fmt: skip
    state = next_state(prev, night)
    assert state.column_names == ["user_id", "content_hash", "model"]
    assert state.to_pylist() == [{"user_id": "a", "content_hash": "1", "model": "m"},
                                 {"user_id": "b", "content_hash": "2b", "model": "m2"},
                                 {"user_id": "c", "content_hash": "3", "model": "m"},  # failed: retried next night
                                 {"user_id": "z", "content_hash": "9", "model": "m2"}]  # fmt: skip
    assert next_state(None, night).column("user_id").to_pylist() == ["b", "z"]
    # The next night, with c's new document again: c is chosen (its state still holds the old hash).
    docs = pa.table({"user_id": ["a", "b", "c", "z"], "content_hash": ["1", "2b", "3b", "9"]})
    assert changed_mask(docs, state, "m2").to_pylist() == [True, False, True, False]  # a: made by model m


def test_new_files_are_those_not_read_by_an_earlier_night_with_the_same_size_and_time() -> None:
    from conf_profile.log_input import LogInput

    listed = LogInput(None, ("/l/b.parquet", "/l/a.parquet", "/l/c.parquet"), "parquet", 6,
                      (("/l/bad.parquet", "not parquet"),), ((1,), (2,), (3,)), (1, 2, 3), (10, 20, 30))  # fmt: skip
    files = file_listing(listed)
    assert files.schema == INPUT_FILES_SCHEMA
    assert files.to_pylist() == [{"path": "/l/a.parquet", "bytes": 2, "mtime_ns": 20},
                                 {"path": "/l/b.parquet", "bytes": 1, "mtime_ns": 10},
                                 {"path": "/l/bad.parquet", "bytes": -1, "mtime_ns": 0},  # unreadable: reported once
                                 {"path": "/l/c.parquet", "bytes": 3, "mtime_ns": 30}]  # fmt: skip
    seen = pa.Table.from_pylist([{"path": "/l/a.parquet", "bytes": 2, "mtime_ns": 20},  # the same file
                                 {"path": "/l/b.parquet", "bytes": 1, "mtime_ns": 11},  # rewritten since
                                 {"path": "/l/bad.parquet", "bytes": -1, "mtime_ns": 0},
                                 {"path": "/l/gone.parquet", "bytes": 5, "mtime_ns": 5}],
                                schema=INPUT_FILES_SCHEMA)  # fmt: skip
    assert new_files(files, seen).column("path").to_pylist() == ["/l/b.parquet", "/l/c.parquet"]
    assert new_files(files, INPUT_FILES_SCHEMA.empty_table()).num_rows == 4


def test_the_ingest_hash_follows_the_settings_that_shape_documents_only() -> None:
    from conf_profile.core.settings import IngestConfig

    base = ingest_settings_hash(IngestConfig())
    assert base == ingest_settings_hash(IngestConfig(buckets=7, bucket_mb=1, batch_rows=10, cpus_per_task=1.0))
    assert base != ingest_settings_hash(IngestConfig(token_budget=600))
    assert base != ingest_settings_hash(IngestConfig(max_line_chars=100))
    assert len(base) == 16
    last = {"model": "m", "ingest_hash": base}
    assert full_read_reason(True, last, "m", base) == ""
    assert full_read_reason(True, last, "m", ingest_settings_hash(IngestConfig(token_budget=600))) == (
        "the ingest settings changed")  # fmt: skip


def test_the_default_calibrator_is_the_gold_refit_for_this_student_else_the_runs(tmp_path) -> None:
    from conf_profile.stages.nightly import default_calibration

    run = tmp_path / "run"
    for name in ("rl", "sft"):
        (run / "models" / name).mkdir(parents=True)
    assert default_calibration(str(run / "models" / "rl")) is None
    (run / "calibration.json").write_text("{}")
    (run / "calibration_student.json").write_text(json.dumps({"fitted_for": "rl", "attributes": {}}))
    assert default_calibration(str(run / "models" / "rl")) == run / "calibration_student.json"
    assert default_calibration(str(run / "models" / "sft")) == run / "calibration.json"  # refitted for another


def test_a_second_night_on_a_held_store_exits_4_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "store"
    out.mkdir()
    (out / ".lease").write_text(json.dumps({"job": "nightly", "date": "2026-11-01", "pid": os.getpid(),
                                            "host": socket.gethostname()}))  # fmt: skip
    res = _nightly(out, tmp_path / "no-logs", "2026-11-02", tmp_path / "no-model")
    assert res.returncode == 4, res.stderr[-2000:]
    assert "another run is writing these tables" in res.stderr and '"date": "2026-11-01"' in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lease"]


def test_a_night_whose_rows_were_all_rejected_has_no_documents_not_an_error(tmp_path) -> None:
    from conf_profile.storage import read_documents

    (tmp_path / "documents").mkdir()
    docs = read_documents(tmp_path, ["user_id", "document", "last_event_time"])
    assert docs.num_rows == 0 and docs.column_names == ["user_id", "document", "last_event_time"]


def _nightly_cmd(out: Path, logs: Path, date: str, model: Path, *extra: str) -> list[str]:
    args = ["--logs", str(logs), "--date", date, "--model", str(model), "--out", str(out), "--set",
            "infer.max_tokens=600", "--set", "nightly.max_parse_failure_rate=1", "--set", "nightly.max_abstain_rate=1",
            "--set", "nightly.max_drift=1", *extra]  # fmt: skip
    return [sys.executable, "-m", "jobs.nightly", *args]


def _nightly(out: Path, logs: Path, date: str, model: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = _nightly_cmd(out, logs, date, model, *extra)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _tables(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs.tables", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _store(out: Path):
    from conf_profile.core.settings import NightlyConfig
    from conf_profile.tables import open_store

    return open_store(NightlyConfig(root=str(out)))


def _partition(store, date: str) -> pa.Table:
    """The night's rows of the profiles table (empty before the table exists)."""
    import pyarrow.compute as pc

    if store.table("profiles") is None:
        return pa.table({"user_id": pa.array([], pa.string())})
    profiles = store.read("profiles")
    return profiles.filter(pc.equal(profiles.column("dt"), date)).drop_columns(["dt"])


def _arrive(logs: Path, name: str, users: list[str]) -> int:
    """A new file ``name`` in the logs folder: one new event (a day after the newest) for each of ``users``;
    returns its rows."""
    table = pads.dataset(logs).to_table()
    newest = max(t for t in table.column("event_time").to_pylist() if t and t.startswith("20"))
    later = newest[:8] + f"{int(newest[8:10]) + 1:02d}" + newest[10:] if newest[8:10] < "28" else newest
    rows = []
    for u in users:
        row = next(r for r in table.to_pylist() if r["user_id"] == u)
        rows.append({**row, "event_id": f"e_{name}_{u}", "event_time": later})
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), logs / name)
    return len(rows)


def _read(out: Path, date: str) -> dict:
    """What the night of ``date`` read (its manifest entry's ``input``)."""
    return json.loads((out / "work" / f"dt={date}" / "manifest.json").read_text())["stages"]["nightly"]["input"]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
def test_two_nights_reprofile_only_changed_users_and_a_failed_gate_publishes_nothing(tmp_path) -> None:
    from conf_profile.models import tiny_model_dir
    from conf_profile.synthetic.dataset import write_dataset

    model = tiny_model_dir(tmp_path / "cache")
    write_dataset(tmp_path / "data", users=8, seed=3, files=1)
    logs, out = tmp_path / "data" / "logs", tmp_path / "store"
    history_rows = pads.dataset(logs).count_rows()

    first = _nightly(out, logs, "2026-11-01", model)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _read(out, "2026-11-01") == {"files_listed": 1, "files_read": 1, "full_read": "no night before this date",
                                      "rows_read": history_rows, "stored_events_read": 0}  # fmt: skip
    store = _store(out)
    night1 = _partition(store, "2026-11-01")
    users = sorted(night1.column("user_id").to_pylist())
    assert len(users) == 8 and store.read("profiles_latest").num_rows == 8
    mark1 = store.watermark()
    stored = store.read("events")
    assert set(stored.column("dt").to_pylist()) == {"2026-11-01"} and stored.num_rows > 8

    assert night1.column("calibration_hash").unique().to_pylist() == ["none"]  # no calibrator beside this model
    assert night1.column("teachers").null_count == 8  # a model from no run: its teachers are not known
    assert len(set(night1.column("content_hash").to_pylist())) == 8
    state1 = store.state_before("2026-11-02")
    assert state1.column_names == ["user_id", "content_hash", "model"] and state1.num_rows == 8

    # Day 2: two files arrive in the logs folder: new events of two users, and a late event of a third
    # (stamped before night 1's newest event). Night 2 reads those files only (not the history again).
    new_rows = _arrive(logs, "part-1.parquet", users[:2])
    late_user = users[2]
    late = datetime.fromisoformat(mark1["last_event_time"]) - timedelta(minutes=5)
    row = next(r for r in pads.dataset(logs).to_table().to_pylist() if r["user_id"] == late_user)
    late_row = {**row, "event_id": "e_late", "event_time": late.strftime("%Y-%m-%dT%H:%M:%SZ")}
    pq.write_table(pa.Table.from_pylist([late_row], schema=pq.read_schema(logs / "part-1.parquet")),
                   logs / "part-2.parquet")  # fmt: skip
    changed = sorted([*users[:2], late_user])
    second = _nightly(out, logs, "2026-11-02", model)
    assert second.returncode == 0, second.stderr[-3000:]
    earlier_events = stored.filter(pc.is_in(stored.column("user_id"), value_set=pa.array(changed))).num_rows
    assert _read(out, "2026-11-02") == {"files_listed": 3, "files_read": 2, "full_read": None,
                                       "rows_read": new_rows + 1, "stored_events_read": earlier_events}  # fmt: skip
    read2 = _read(out, "2026-11-02")
    night2 = _partition(store, "2026-11-02")
    assert sorted(night2.column("user_id").to_pylist()) == changed  # the users whose document changed
    hashes1 = dict(zip(state1.column("user_id").to_pylist(), state1.column("content_hash").to_pylist(), strict=True))
    assert all(r["content_hash"] != hashes1[r["user_id"]] for r in night2.to_pylist())
    state2 = store.state_before("2026-11-03").to_pylist()
    keys = ["user_id", "content_hash", "model"]
    latest = store.read("profiles_latest")
    parsed = [{k: r[k] for k in keys} for r in latest.to_pylist() if r["error"] is None]
    assert all(r in state2 for r in parsed) and {r["user_id"] for r in state2} <= set(users)
    assert sorted(latest.column("user_id").to_pylist()) == users  # one row per user
    runs = dict(zip(latest.column("user_id").to_pylist(), latest.column("run_id").to_pylist(), strict=True))
    assert {u for u, r in runs.items() if r == "nightly-2026-11-02"} == set(changed)
    mark2 = store.watermark()
    assert mark2["last_event_time"] > mark1["last_event_time"] and mark2["since"] == mark1["last_event_time"]

    # The same date again: the same files and users, the partition replaced (no duplicates). While it runs,
    # a second night started on the same store exits 4 at the lease and writes nothing.
    log = tmp_path / "again.log"
    with log.open("w") as err:
        again = subprocess.Popen(_nightly_cmd(out, logs, "2026-11-02", model), cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=err)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (out / ".lease").exists() and again.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    rival = _nightly(out, logs, "2026-11-03", model)
    assert again.poll() is None, "the first night ended before the second one started"
    assert rival.returncode == 4, rival.stderr[-3000:]
    assert "another run is writing these tables" in rival.stderr and '"date": "2026-11-02"' in rival.stderr
    assert not (out / "work" / "dt=2026-11-03").exists()
    assert again.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert _read(out, "2026-11-02") == read2
    assert sorted(_partition(store, "2026-11-02").column("user_id").to_pylist()) == changed
    assert store.read("profiles_latest").num_rows == 8
    assert store.read("events").num_rows == stored.num_rows + new_rows + 1  # each event kept once

    # A forced gate failure (outputs cut at 16 tokens never parse): exit 3, nothing committed.
    _arrive(logs, "part-3.parquet", users[2:3])
    before = list(store.history())
    failed = _nightly(out, logs, "2026-11-03", model, "--set", "infer.max_tokens=16", "--set",
                      "nightly.max_parse_failure_rate=0.5")  # fmt: skip
    assert failed.returncode == 3, failed.stderr[-3000:]
    assert "parse-failure rate 1.000 > 0.500" in failed.stderr and "nothing published" in failed.stderr
    assert _partition(store, "2026-11-03").num_rows == 0 and list(store.history()) == before  # no new snapshot
    gates = json.loads((out / "work" / "dt=2026-11-03" / "gates.json").read_text())
    assert gates["published"] is False and gates["stats"]["users"] == 1
    assert store.seen_files("2026-11-04").num_rows == 3  # part-3 is not recorded: the next night reads it

    earlier = _nightly(out, logs, "2026-11-01", model)  # before the watermark: refused before any work
    assert earlier.returncode == 2 and "before the last published date" in earlier.stderr

    # The tables as a user reads them: the history, a read as of night 1, a rollback of night 2.
    history = _tables("history", "--out", str(out))
    assert history.returncode == 0 and "profiles_latest" in history.stdout and "2026-11-02" in history.stdout
    as_of = _tables("read", "profiles_latest", "--as-of", "2026-11-01", "--to", str(tmp_path / "as_of.parquet"),
                    "--out", str(out))  # fmt: skip
    assert as_of.returncode == 0, as_of.stderr[-2000:]
    assert set(pq.read_table(tmp_path / "as_of.parquet").column("run_id").to_pylist()) == {"nightly-2026-11-01"}
    back = _tables("rollback", "--before", "2026-11-02", "--out", str(out))
    assert back.returncode == 0, back.stderr[-2000:]
    assert set(store.read("profiles_latest").column("run_id").to_pylist()) == {"nightly-2026-11-01"}
    assert store.watermark() == mark1 and _partition(store, "2026-11-02").num_rows == 0
