"""The nightly store's tables (conf_profile.tables): the Parquet folders and the Iceberg tables across
nights, a re-run of a date, a failed output keeping a good row, rollback and reads as of a night, and a
plain pyiceberg reader of the tables."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.core.profiles import PROVENANCE, profile_schema
from conf_profile.core.settings import NightlyConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.infer import attributes_table
from conf_profile.storage import REJECT_SCHEMA
from conf_profile.tables import IcebergStore, ParquetStore, TableError, open_store

TAX = load_taxonomy()
SCHEMA = profile_schema(TAX, PROVENANCE)


def _rows(night: str, *rows: tuple[str, str | None, str]) -> pa.Table:
    """Profile rows (user, error, gender) made on ``night``."""
    return pa.Table.from_pylist([{"user_id": u, "error": err, "gender": g, "content_hash": f"{u}-{night}", "model": "m",
                                  "run_id": f"nightly-{night}"} for u, err, g in rows], schema=SCHEMA)  # fmt: skip


def _night(date: str, users: int, since: str | None = None) -> dict:
    return {"date": date, "since": since, "last_event_time": f"{date}T20:00:00+00:00", "users": users,
            "published_at": f"{date}T23:00:00+00:00", "run_id": f"nightly-{date}"}  # fmt: skip


def _publish(store, date: str, profiles: pa.Table) -> int:
    published = store.state_before(date)
    rejects = REJECT_SCHEMA.empty_table()
    return store.publish(date, profiles, attributes_table(profiles, TAX), rejects, published, _night(date, 3))


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
