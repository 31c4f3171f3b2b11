"""The nightly store's tables (``nightly.root``), in one of two formats (``nightly.table_format``):

- ``iceberg`` (default): Apache Iceberg tables in a pyiceberg catalog: by default a SQL catalog in the
  SQLite file ``<root>/catalog.db`` with the data under ``<root>/warehouse/``; any pyiceberg catalog
  (REST, Glue, Hive, ...) by ``nightly.catalog``. Tables, in the namespace ``nightly.namespace``:
  ``profiles``, ``profile_attributes``, ``rejects``, ``events`` and ``input_files`` (partitioned by
  ``dt``: a night replaces its date's partition), ``profiles_latest`` (upserted by user), ``state``
  (upserted by user: what each published profile was made from) and ``nights`` (one row per published
  night: its watermark). Each table gets one commit per night (its snapshots carry ``conf_profile.night``
  = the date and ``conf_profile.run_id``), ``nights`` last: a night is published when its row is there,
  and ``read`` sees each table as of that commit (``recover`` sets back a publish cut short).
  ``rollback(before=D)`` sets every table back to its last snapshot of a night before D;
  ``read(table, as_of=D)`` reads a table as it was after night D.
- ``parquet``: Hive-style folders ``profiles/dt=D/``, ``profile_attributes/dt=D/``, ``rejects/dt=D/``,
  ``events/dt=D/``, ``input_files/dt=D/``, ``state/dt=D/``, ``profiles_latest/``, ``nights/D.json`` and
  ``watermark.json``, each swapped in atomically on a local disk, for readers that need plain files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core.nightly import INPUT_FILES_SCHEMA, STATE_COLUMNS, next_state
from conf_profile.core.settings import NightlyConfig
from conf_profile.raycluster import SMALL_CPUS, read_parquet
from conf_profile.storage import EVENT_SCHEMA, replace_folder, write_text_atomic

NIGHT = "conf_profile.night"  # snapshot property: the night (YYYY-MM-DD) that committed it
RUN_ID = "conf_profile.run_id"
BEFORE_ANY = "0000-00-00"  # the night of a rollback's emptying commit: before every real night
# dt-partitioned, a night replaces its date: the night's profiles and rejects, the validated events that
# arrived that night (a later night rebuilds a user's document from them) and the input files it read.
PARTITIONED = ("profiles", "profile_attributes", "rejects", "events", "input_files")
WORKER_WRITTEN = ("profiles", "profile_attributes", "events")  # written by Ray Data's Iceberg writer
TABLES = (*PARTITIONED, "profiles_latest", "state", "nights")
NIGHTS_SCHEMA = pa.schema([("dt", pa.string()), ("since", pa.string()), ("last_event_time", pa.string()),
                           ("users", pa.int64()), ("published_at", pa.string()), ("run_id", pa.string()),
                           ("model", pa.string()), ("ingest_hash", pa.string())])  # fmt: skip


class TableError(ValueError):
    """The store cannot do what was asked (another schema, no such table or night)."""


def open_store(cfg: NightlyConfig) -> IcebergStore | ParquetStore:
    root = Path(cfg.root)
    return IcebergStore(root, cfg) if cfg.table_format == "iceberg" else ParquetStore(root)


def latest_rows(previous_good: pa.Table, tonight: pa.Table) -> pa.Table:
    """The rows tonight writes into profiles_latest: every row of tonight's, except that a user whose output
    failed tonight keeps a previous good row (``previous_good``: the good latest rows of tonight's users).

    >>> t = pa.table({"user_id": ["a", "b", "c"], "error": [None, "not_json", "not_json"]})
    >>> latest_rows(pa.table({"user_id": ["b"], "error": pa.nulls(1, pa.string())}), t)["user_id"].to_pylist()
    ['a', 'c']
    """
    failed = tonight.filter(pc.is_valid(tonight.column("error"))).column("user_id")
    keep_old = pc.is_in(previous_good.column("user_id"), value_set=failed.combine_chunks())
    kept = previous_good.filter(keep_old).column("user_id")
    return tonight.filter(pc.invert(pc.is_in(tonight.column("user_id"), value_set=kept.combine_chunks())))


class ParquetStore:
    """Hive-style Parquet folders on a local disk (each swapped in atomically)."""

    format = "parquet"

    def __init__(self, root: Path) -> None:
        self.root = root

    def watermark(self) -> dict[str, Any] | None:
        path = self.root / "watermark.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def night_before(self, date: str) -> dict[str, Any] | None:
        """The last published night of a date before ``date`` (``nights/<date>.json``)."""
        folder = self.root / "nights"
        found = sorted(p for p in folder.glob("*.json") if p.stem < date) if folder.is_dir() else []
        return json.loads(found[-1].read_text(encoding="utf-8")) if found else None

    def state_before(self, date: str) -> pa.Table | None:
        """STATE_COLUMNS of every published user as of the last night before ``date`` (None before the first)."""
        folder = self.root / "state"
        dates = sorted(p.name for p in folder.glob("dt=*") if p.name < f"dt={date}") if folder.is_dir() else []
        return pq.read_table(folder / dates[-1], columns=list(STATE_COLUMNS)) if dates else None

    def _before(self, name: str, date: str, columns: list[str], row_filter: Any = None) -> pa.Table:
        """The rows of the dt-partitioned table ``name`` of the nights before ``date``."""
        import pyarrow.dataset as pads

        folder = self.root / name
        parts = sorted(p for p in folder.glob("dt=*") if p.name < f"dt={date}") if folder.is_dir() else []
        files = [f for p in parts for f in sorted(p.glob("*.parquet"))]
        if not files:
            return _schema_of(name).empty_table().select(columns)
        return pads.dataset([str(f) for f in files], format="parquet").to_table(columns=columns, filter=row_filter)

    def seen_files(self, date: str) -> pa.Table:
        """The input files read by the nights before ``date`` (INPUT_FILES_SCHEMA)."""
        return self._before("input_files", date, INPUT_FILES_SCHEMA.names)

    def events_of(self, users: pa.Array, date: str) -> pa.Table:
        """The stored events (EVENT_SCHEMA) of ``users`` from the nights before ``date``."""
        import pyarrow.dataset as pads

        return self._before("events", date, EVENT_SCHEMA.names, pads.field("user_id").isin(users))

    def recover(self) -> list[str]:
        """Nothing to undo here: a night that died mid-publish is re-run for its date (module docstring)."""
        return []

    def previous_profiles(self, date: str) -> pa.Table | None:
        """The profiles of the last night before ``date``."""
        folder = self.root / "profiles"
        found = folder.glob("dt=*") if folder.is_dir() else []
        dates = sorted(p.name for p in found if p.is_dir() and p.name < f"dt={date}")
        return pq.read_table(folder / dates[-1]) if dates else None

    def check_schema(self, profiles: pa.Schema) -> None:
        folder = self.root / "profiles_latest"
        files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if files and pq.read_schema(files[0]).remove_metadata() != profiles:
            raise TableError(f"{folder} has another schema (taxonomy changed?): move it away to start a new table")

    def publish(self, date: str, tables: dict[str, pa.Table], published: pa.Table | None, night: dict[str, Any],
                full: bool = False) -> int:  # fmt: skip
        """The night's partitions (``tables``: one per PARTITIONED name), then profiles_latest, state and the
        watermark; returns the latest's users. ``full``: the night's events are the whole history (the
        earlier nights' events are dropped)."""
        if full:
            for old in sorted((self.root / "events").glob("dt=*")):
                shutil.rmtree(old)
        for name in PARTITIONED:
            replace_folder(self.root / name / f"dt={date}", {"part-0.parquet": tables[name]})
        profiles = _table(tables["profiles"])
        latest = self.update_latest(profiles)
        replace_folder(self.root / "state" / f"dt={date}", {"part-0.parquet": next_state(published, profiles)})
        write_text_atomic(self.root / "nights" / f"{date}.json", json.dumps(night, indent=2) + "\n")
        write_text_atomic(self.root / "watermark.json", json.dumps(night, indent=2) + "\n")
        return latest

    def update_latest(self, profiles: pa.Table) -> int:
        """profiles_latest = tonight's rows (latest_rows) and the previous rows of every other user."""
        folder = self.root / "profiles_latest"
        parts = [profiles]
        if folder.is_dir():
            old = pq.read_table(folder)
            good = old.filter(pc.is_null(old.column("error")))
            tonight = latest_rows(good, profiles)
            others = old.filter(pc.invert(pc.is_in(old.column("user_id"), value_set=tonight.column("user_id"))))
            parts = [others, tonight]
        latest = pa.concat_tables(parts).sort_by("user_id")
        replace_folder(folder, {"part-0.parquet": latest})
        return latest.num_rows


class IcebergStore:
    """Iceberg tables in a pyiceberg catalog (see the module docstring)."""

    format = "iceberg"

    def __init__(self, root: Path, cfg: NightlyConfig) -> None:
        from pyiceberg.catalog import load_catalog

        self.root, self.namespace = root, cfg.namespace
        if cfg.catalog:
            self.properties = dict(cfg.catalog)
        else:
            root.mkdir(parents=True, exist_ok=True)
            where = root.resolve()
            self.properties = {
                "type": "sql",
                "uri": f"sqlite:///{where}/catalog.db",
                "warehouse": f"file://{where}/warehouse",
            }
        self.catalog = load_catalog("conf_profile", **self.properties)
        self.catalog.create_namespace_if_not_exists(self.namespace)

    def table(self, name: str) -> Any:
        """The pyiceberg table, or None before its first night."""
        from pyiceberg.exceptions import NoSuchTableError

        try:
            return self.catalog.load_table(f"{self.namespace}.{name}")
        except NoSuchTableError:
            return None

    def _create(self, name: str, schema: pa.Schema) -> Any:
        table = self.table(name)
        if table is None:
            table = self.catalog.create_table_if_not_exists(f"{self.namespace}.{name}", schema=schema)
            if name in PARTITIONED:
                with table.update_spec() as spec:
                    spec.add_identity("dt")
        return table

    def _line(self, name: str) -> Iterator[Any]:
        """The table's snapshots on its current line, newest first (none before its first night)."""
        table = self.table(name)
        snap = table.current_snapshot() if table is not None else None
        while snap is not None:
            yield snap
            snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None

    def _snapshot(self, name: str, before: str | None = None, upto: str | None = None) -> Any:
        """The table's last snapshot (on its current line) of a night before ``before`` / up to ``upto``;
        None when there is none."""
        for snap in self._line(name):
            night = _night_of(snap)
            if (before is None or night < before) and (upto is None or night <= upto):
                return snap
        return None

    def _read(self, name: str, snap: Any, row_filter: Any = None) -> pa.Table | None:
        from pyiceberg.expressions import AlwaysTrue

        if snap is None:
            return None
        table = self.table(name)
        return table.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snap.snapshot_id).to_arrow()

    def watermark(self, before: str | None = None) -> dict[str, Any] | None:
        """The last published night (of a date before ``before``), or None."""
        nights = self._read("nights", self._snapshot("nights"))
        if nights is not None and before is not None:
            nights = nights.filter(pc.less(nights.column("dt"), before))
        if nights is None or nights.num_rows == 0:
            return None
        last = nights.sort_by([("published_at", "ascending")]).to_pylist()[-1]
        return {"date": last["dt"], "since": last["since"], "last_event_time": last["last_event_time"],
                "users": last["users"], "published_at": last["published_at"], "model": last.get("model"),
                "ingest_hash": last.get("ingest_hash")}  # fmt: skip

    def night_before(self, date: str) -> dict[str, Any] | None:
        """The last published night of a date before ``date``."""
        return self.watermark(before=date)

    def state_before(self, date: str) -> pa.Table | None:
        state = self._read("state", self._snapshot("state", before=date))
        return state.select(list(STATE_COLUMNS)) if state is not None else None

    def _before(self, name: str, date: str, columns: list[str], row_filter: Any = None) -> pa.Table:
        from pyiceberg.expressions import And, LessThan

        snap = self._snapshot(name)
        if snap is None:
            return _schema_of(name).empty_table().select(columns)
        where = LessThan("dt", date) if row_filter is None else And(LessThan("dt", date), row_filter)
        return self._read(name, snap, where).select(columns)

    def seen_files(self, date: str) -> pa.Table:
        return self._before("input_files", date, INPUT_FILES_SCHEMA.names)

    def events_of(self, users: pa.Array, date: str) -> pa.Table:
        from pyiceberg.expressions import In

        return self._before("events", date, EVENT_SCHEMA.names, In("user_id", users.to_pylist()))

    def recover(self) -> list[str]:
        """Undo a publish that did not finish (its process was killed between two commits): every table
        with a snapshot committed after the last published night's row is set back to its last snapshot
        from before it. Returns the tables set back."""
        undone = []
        for name in TABLES:
            current = next(self._line(name), None)
            keep = self._published(name)
            if current is None or (keep is not None and keep.snapshot_id == current.snapshot_id):
                continue
            if keep is None and _night_of(current) == BEFORE_ANY:  # emptied already
                continue
            table = self.table(name)
            if keep is not None:
                table.manage_snapshots().rollback_to_snapshot(keep.snapshot_id).commit()
            else:
                from pyiceberg.expressions import AlwaysTrue

                table.delete(AlwaysTrue(), snapshot_properties={NIGHT: BEFORE_ANY})
            undone.append(name)
        return undone

    def previous_profiles(self, date: str) -> pa.Table | None:
        from pyiceberg.expressions import EqualTo, LessThan

        snap = self._snapshot("profiles")
        if snap is None:
            return None
        scan = self.table("profiles").scan(row_filter=LessThan("dt", date), selected_fields=("dt",),
                                           snapshot_id=snap.snapshot_id)  # fmt: skip
        dates = scan.to_arrow()
        if dates.num_rows == 0:
            return None
        last = pc.max(dates.column("dt")).as_py()
        return self._read("profiles", snap, EqualTo("dt", last)).drop_columns(["dt"])

    def check_schema(self, profiles: pa.Schema) -> None:
        table = self.table("profiles_latest")
        if table is None:
            return
        if [f.name for f in table.schema().fields] != [*profiles.names, "dt"]:
            raise TableError(f"{self.namespace}.profiles_latest has another schema (taxonomy changed?): drop the "
                             "store's tables (or set nightly.namespace) to start new ones")  # fmt: skip

    def publish(self, date: str, tables: dict[str, pa.Table], published: pa.Table | None, night: dict[str, Any],
                full: bool = False) -> int:  # fmt: skip
        """One commit per table, ``nights`` last; returns the users in profiles_latest. ``tables``: the
        night's rows of each PARTITIONED table; ``full``: the night's events are the whole history (they
        replace every earlier night's)."""
        import ray.data
        from pyiceberg.expressions import AlwaysTrue, EqualTo, In
        from ray.data import SaveMode
        from ray.data.expressions import col

        props = {NIGHT: date, RUN_ID: str(night["run_id"])}
        identifier = {"catalog_kwargs": {"name": "conf_profile", **self.properties}, "snapshot_properties": props}
        profiles = _table(tables["profiles"])
        for name in PARTITIONED:
            value, schema = tables[name], _schema(tables[name])
            target = self._create(name, schema.append(pa.field("dt", pa.string())))
            replaced = AlwaysTrue() if full and name == "events" else EqualTo("dt", date)
            if _rows(value) and name in WORKER_WRITTEN:  # written by the workers
                where = None if full and name == "events" else col("dt") == date  # None: the whole table
                ds = read_parquet([str(value)], schema.names) if isinstance(value, Path) else ray.data.from_arrow(value)
                ds = ds.map_batches(_with_dt, fn_args=(date,), batch_format="pyarrow", num_cpus=SMALL_CPUS)
                ds.write_iceberg(f"{self.namespace}.{name}", mode=SaveMode.OVERWRITE, overwrite_filter=where,
                                 **identifier)  # fmt: skip
            else:
                target.overwrite(_with_dt(_table(value), date), overwrite_filter=replaced, snapshot_properties=props)
        tonight = _with_dt(profiles, date)
        latest = self._create("profiles_latest", tonight.schema)
        if tonight.num_rows:
            # the previous rows that can matter: those of tonight's users whose output failed (usually few)
            failed = tonight.filter(pc.is_valid(tonight.column("error"))).column("user_id").to_pylist()
            old = (
                latest.scan(row_filter=In("user_id", failed)).to_arrow()
                if failed and latest.current_snapshot()
                else None
            )
            good = old.filter(pc.is_null(old.column("error"))) if old is not None else tonight.slice(0, 0)
            latest.upsert(latest_rows(good, tonight), join_cols=["user_id"], snapshot_properties=props)
        parsed = profiles.filter(pc.is_null(profiles.column("error"))).select(list(STATE_COLUMNS))
        state = self._create("state", parsed.schema)
        if parsed.num_rows:
            state.upsert(parsed, join_cols=["user_id"], snapshot_properties=props)
        row = {k: night.get(k) for k in NIGHTS_SCHEMA.names if k != "dt"}
        self._create("nights", NIGHTS_SCHEMA).append(pa.Table.from_pylist([{**row, "dt": date}], schema=NIGHTS_SCHEMA),
                                                     snapshot_properties=props)  # fmt: skip
        return self.table("profiles_latest").scan(selected_fields=("user_id",)).to_arrow().num_rows

    def history(self) -> Iterator[dict[str, Any]]:
        """Every snapshot of every table on its current line, oldest first."""
        for name in TABLES:
            for snap in reversed(list(self._line(name))):
                extra = snap.summary.additional_properties if snap.summary else {}
                yield {"table": name, "snapshot_id": snap.snapshot_id, "night": extra.get(NIGHT),
                       "operation": str(snap.summary.operation.value) if snap.summary else None,
                       "committed_at_ms": snap.timestamp_ms, "total_records": extra.get("total-records")}  # fmt: skip

    def rollback(self, before: str) -> dict[str, str]:
        """Every table back to its last snapshot of a night before ``before`` (emptied when it has none);
        returns what was done per table."""
        from pyiceberg.expressions import AlwaysTrue

        done = {}
        for name in TABLES:
            table = self.table(name)
            if table is None or table.current_snapshot() is None:
                done[name] = "no table"
                continue
            snap = self._snapshot(name, before=before)
            if snap is not None and snap.snapshot_id == table.current_snapshot().snapshot_id:
                done[name] = f"unchanged (snapshot {snap.snapshot_id})"
            elif snap is not None:
                table.manage_snapshots().rollback_to_snapshot(snap.snapshot_id).commit()
                night = _night_of(snap)
                done[name] = f"rolled back to snapshot {snap.snapshot_id} (night {night})"
            else:
                table.delete(AlwaysTrue(), snapshot_properties={NIGHT: BEFORE_ANY})
                done[name] = "emptied (no night before that)"
        return done

    def _published(self, name: str) -> Any:
        """The table's last snapshot committed no later than the last published night's row: a publish
        that did not finish (recover undoes it) is never read."""
        head = next(self._line("nights"), None)
        if head is None:
            return None
        return next((snap for snap in self._line(name) if snap.timestamp_ms <= head.timestamp_ms), None)

    def read(self, name: str, as_of: str | None = None) -> pa.Table:
        """The table as the last published night left it, or as it was after night ``as_of``."""
        if name not in TABLES:
            raise TableError(f"no table {name!r}: the tables are {', '.join(TABLES)}")
        snap = self._snapshot(name, upto=as_of) if as_of else self._published(name)
        table = self._read(name, snap)
        if table is None:
            raise TableError(f"{self.namespace}.{name} has no data" + (f" as of {as_of}" if as_of else ""))
        return table


def _night_of(snap: Any) -> str:
    return (snap.summary.additional_properties if snap.summary else {}).get(NIGHT, BEFORE_ANY)


def _table(value: pa.Table | Path) -> pa.Table:
    """A table given as itself or as one Parquet file."""
    return pq.read_table(value) if isinstance(value, Path) else value


def _schema(value: pa.Table | Path) -> pa.Schema:
    return pq.read_schema(value).remove_metadata() if isinstance(value, Path) else value.schema


def _rows(value: pa.Table | Path) -> int:
    return pq.ParquetFile(value).metadata.num_rows if isinstance(value, Path) else value.num_rows


def _schema_of(name: str) -> pa.Schema:
    return {"events": EVENT_SCHEMA, "input_files": INPUT_FILES_SCHEMA}[name]


def _with_dt(table: pa.Table, date: str) -> pa.Table:
    return table.append_column("dt", pa.array([date] * table.num_rows, pa.string()))
