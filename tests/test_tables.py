"""The nightly store's tables (conf_profile.tables): the Parquet folders and the Iceberg tables across
nights, a re-run of a date, a failed output keeping a good row, rollback and reads as of a night, and a
plain pyiceberg reader of the tables."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.core.nightly import INPUT_FILES_SCHEMA
from conf_profile.core.profiles import PROVENANCE, profile_schema
from conf_profile.core.settings import NightlyConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.infer import attributes_table
from conf_profile.storage import EVENT_SCHEMA, REJECT_SCHEMA
from conf_profile.tables import IcebergStore, ParquetStore, TableError, open_store

TAX = load_taxonomy()
SCHEMA = profile_schema(TAX, PROVENANCE)


def _rows(night: str, *rows: tuple[str, str | None, str]) -> pa.Table:
    """Profile rows (user, error, gender) made on ``night``."""
    return pa.Table.from_pylist([{"user_id": u, "error": err, "gender": g, "content_hash": f"{u}-{night}", "model": "m",
                                  "run_id": f"nightly-{night}"} for u, err, g in rows], schema=SCHEMA)  # fmt: skip


def _night(date: str, users: int, since: str | None = None) -> dict:
    return {"date": date, "since": since, "last_event_time": f"{date}T20:00:00+00:00", "users": users,
            "published_at": f"{date}T23:00:00+00:00", "run_id": f"nightly-{date}", "model": "m",
            "ingest_hash": "h"}  # fmt: skip


def _events(date: str, profiles: pa.Table) -> pa.Table:
    """Two events per user of the night (ids carry the date)."""
    users = [u for u in profiles.column("user_id").to_pylist() for _ in range(2)]
    return pa.table({"user_id": users, "event_id": [f"{u}-{date}-{i % 2}" for i, u in enumerate(users)],
                     "ts_ms": [1] * len(users), "source": ["search"] * len(users), "text": ["x"] * len(users)},
                    schema=EVENT_SCHEMA)  # fmt: skip


def _publish(store, date: str, profiles: pa.Table, full: bool = False) -> int:
    published = store.state_before(date)
    files = pa.table({"path": [f"/logs/{date}.parquet"], "bytes": [10], "mtime_ns": [1]}, schema=INPUT_FILES_SCHEMA)
    tables = {"profiles": profiles, "profile_attributes": attributes_table(profiles, TAX), "input_files": files,
              "rejects": REJECT_SCHEMA.empty_table(), "events": _events(date, profiles)}  # fmt: skip
    return store.publish(date, tables, published, _night(date, 3), full=full)


def _check_arrivals(store) -> None:
    """What a night reads from the store: the files and events of the nights before its date."""
    assert store.seen_files("2026-11-01").num_rows == 0
    assert store.seen_files("2026-11-02").column("path").to_pylist() == ["/logs/2026-11-01.parquet"]
    assert sorted(store.seen_files("2026-11-03").column("path").to_pylist()) == [
        "/logs/2026-11-01.parquet", "/logs/2026-11-02.parquet"]  # fmt: skip
    assert store.night_before("2026-11-02")["date"] == "2026-11-01" and store.night_before("2026-11-01") is None
    c = store.events_of(pa.array(["c", "zz"]), "2026-11-03")  # c: in both nights; zz: unknown
    assert c.schema == EVENT_SCHEMA and sorted(c.column("event_id").to_pylist()) == [
        "c-2026-11-01-0", "c-2026-11-01-1", "c-2026-11-02-0", "c-2026-11-02-1"]  # fmt: skip
    assert store.events_of(pa.array(["c"]), "2026-11-02").num_rows == 2  # before night 2: night 1's only


NIGHT1 = ("2026-11-01", _rows("1", ("a", None, "male"), ("b", None, "female"), ("c", "not_json", "unknown")))
# b fails tonight (keeps its good row of night 1), c parses now, d is new
NIGHT2 = ("2026-11-02", _rows("2", ("b", "not_json", "unknown"), ("c", None, "male"), ("d", None, "female")))


def _by_user(table: pa.Table) -> dict:
    return {r["user_id"]: (r["run_id"], r["error"]) for r in table.to_pylist()}


AFTER1 = {"a": ("nightly-1", None), "b": ("nightly-1", None), "c": ("nightly-1", "not_json")}
AFTER2 = {**AFTER1, "c": ("nightly-2", None), "d": ("nightly-2", None)}  # b: night 1's good row stays


def test_parquet_store_publishes_partitions_latest_state_and_watermark(tmp_path) -> None:
    store = open_store(NightlyConfig(root=str(tmp_path), table_format="parquet"))
    assert isinstance(store, ParquetStore) and store.watermark() is None and store.state_before("2026-11-01") is None
    assert _publish(store, *NIGHT1) == 3
    assert _publish(store, *NIGHT2) == 4
    assert _by_user(pq.read_table(tmp_path / "profiles_latest")) == AFTER2
    assert pq.read_table(tmp_path / "profiles" / "dt=2026-11-02").num_rows == 3
    assert pq.read_table(tmp_path / "profile_attributes" / "dt=2026-11-02").num_rows == 3 * len(TAX.attributes)
    assert sorted(store.state_before("2026-11-02").column("user_id").to_pylist()) == ["a", "b"]  # c failed: retried
    assert sorted(store.state_before("2026-11-03").column("user_id").to_pylist()) == ["a", "b", "c", "d"]
    assert store.previous_profiles("2026-11-02").num_rows == 3
    assert json.loads((tmp_path / "watermark.json").read_text())["date"] == "2026-11-02" == store.watermark()["date"]
    with pytest.raises(TableError, match="another schema"):
        store.check_schema(SCHEMA.remove(1))
    _check_arrivals(store)
    _publish(store, "2026-11-03", NIGHT2[1], full=True)  # a full night: its events are the whole history
    assert store.events_of(pa.array(["c"]), "2026-11-04").column("event_id").to_pylist() == [
        "c-2026-11-03-0", "c-2026-11-03-1"]  # fmt: skip


@pytest.mark.ray
@pytest.mark.slow
def test_iceberg_store_across_nights_rerun_rollback_and_as_of(tmp_path) -> None:
    import ray
    from pyiceberg.catalog.sql import SqlCatalog

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        store = open_store(NightlyConfig(root=str(tmp_path / "store")))
        assert isinstance(store, IcebergStore) and store.watermark() is None
        assert store.state_before("2026-11-01") is None and store.previous_profiles("2026-11-01") is None
        assert _publish(store, *NIGHT1) == 3
        assert _publish(store, *NIGHT2) == 4
        assert _publish(store, *NIGHT2) == 4  # a re-run of the date: the same tables, no duplicates
    finally:
        ray.shutdown()
    _check_arrivals(store)
    latest = store.read("profiles_latest")
    assert _by_user(latest) == AFTER2 and latest.num_rows == 4
    profiles = store.read("profiles")
    assert sorted(profiles.column("dt").to_pylist()) == ["2026-11-01"] * 3 + ["2026-11-02"] * 3
    assert store.read("profile_attributes").num_rows == 6 * len(TAX.attributes)
    # the state as of the last night before each date, whichever run of the date wrote it last
    assert sorted(store.state_before("2026-11-02").column("user_id").to_pylist()) == ["a", "b"]
    assert sorted(store.state_before("2026-11-03").column("user_id").to_pylist()) == ["a", "b", "c", "d"]
    assert store.previous_profiles("2026-11-02").column("run_id").to_pylist() == ["nightly-1"] * 3
    assert store.watermark()["date"] == "2026-11-02" and store.read("nights").num_rows == 3
    nights = {h["night"] for h in store.history() if h["table"] == "profiles_latest"}
    assert nights == {"2026-11-01", "2026-11-02"}
    with pytest.raises(TableError, match="another schema"):
        store.check_schema(SCHEMA.remove(1))

    # As of night 1, then a rollback of night 2: every table as it was after night 1.
    assert _by_user(store.read("profiles_latest", as_of="2026-11-01")) == AFTER1
    done = store.rollback(before="2026-11-02")
    assert all(v.startswith("rolled back") for k, v in done.items()), done
    assert _by_user(store.read("profiles_latest")) == AFTER1
    assert store.read("profiles").column("dt").unique().to_pylist() == ["2026-11-01"]
    assert store.watermark()["date"] == "2026-11-01"
    assert sorted(store.state_before("2026-11-02").column("user_id").to_pylist()) == ["a", "b"]

    # A plain reader: pyiceberg on the catalog file, as a user would open it (the catalog is named conf_profile).
    plain = SqlCatalog("conf_profile", uri=f"sqlite:///{tmp_path / 'store' / 'catalog.db'}",
                       warehouse=f"file://{tmp_path / 'store' / 'warehouse'}")  # fmt: skip
    table = plain.load_table("conf_profile.profiles_latest")
    assert table.scan().to_arrow().num_rows == 3 and len(table.history()) >= 3
    with pytest.raises(TableError, match="no table"):
        store.read("nope")
    assert store.rollback(before="2026-11-01")["profiles_latest"] == "emptied (no night before that)"
    assert store.read("profiles_latest").num_rows == 0 and store.watermark() is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollback"], "rollback needs --before"),
        (["read"], "read needs a TABLE"),
        (["rollback", "--before", "yesterday"], "--before yesterday: use YYYY-MM-DD"),
        (["history"], "no catalog.db there"),
        (["history", "--set", "nightly.table_format=parquet"], "need iceberg"),
    ],
)
def test_the_tables_job_refuses_bad_requests_with_exit_2(tmp_path, capsys, args, message) -> None:
    from jobs import tables as tables_job

    with pytest.raises(SystemExit) as exit_info:
        tables_job.main([*args, "--out", str(tmp_path / "empty")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "empty").exists()  # nothing created where no store is


KILLED_MID_PUBLISH = """
import os, signal, sys
import ray
sys.path.insert(0, {tests!r})
from test_tables import NIGHT1, NIGHT2, _publish
from conf_profile.core.settings import NightlyConfig
from conf_profile.tables import IcebergStore, open_store

ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
store = open_store(NightlyConfig(root={root!r}))
_publish(store, *NIGHT1)
create = IcebergStore._create

def dying(self, name, schema):  # after the partitions and profiles_latest are committed, before state
    if name == "state":
        os.kill(os.getpid(), signal.SIGKILL)
    return create(self, name, schema)

IcebergStore._create = dying
_publish(store, *NIGHT2)
"""


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.fault
def test_a_driver_killed_mid_publish_leaves_the_tables_at_the_previous_night(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    import ray
    from pyiceberg.catalog.sql import SqlCatalog

    root = tmp_path / "store"
    script = KILLED_MID_PUBLISH.format(tests=str(Path(__file__).parent), root=str(root))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == -9, res.stderr[-3000:]  # killed between two commits of night 2
    plain = SqlCatalog("conf_profile", uri=f"sqlite:///{root / 'catalog.db'}", warehouse=f"file://{root / 'warehouse'}")
    raw = plain.load_table("conf_profile.profiles_latest").scan().to_arrow()
    assert _by_user(raw) == AFTER2  # night 2's profiles_latest commit landed before the kill

    store = open_store(NightlyConfig(root=str(root)))
    assert _by_user(store.read("profiles_latest")) == AFTER1  # the store reads what the last night published
    assert store.watermark()["date"] == "2026-11-01"
    undone = store.recover()
    assert undone == ["profiles", "profile_attributes", "rejects", "events", "input_files", "profiles_latest"]
    assert _by_user(plain.load_table("conf_profile.profiles_latest").scan().to_arrow()) == AFTER1
    assert plain.load_table("conf_profile.profiles").scan().to_arrow().column("dt").unique().to_pylist() == [
        "2026-11-01"]  # fmt: skip
    assert store.seen_files("2026-11-03").num_rows == 1 and store.recover() == []
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        assert _publish(store, *NIGHT2) == 4  # the night runs again from the previous night's tables
    finally:
        ray.shutdown()
    assert _by_user(store.read("profiles_latest")) == AFTER2
