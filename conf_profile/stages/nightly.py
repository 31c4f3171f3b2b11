"""The nightly refresh: the input files that arrived since the last published night are read, their users'
documents rebuilt with the events the store keeps, the users whose document changed profiled again, and
their rows published only when the quality gates pass (conf_profile.core.nightly).

The table store (``nightly.root``, conf_profile/tables.py) holds, per night: the re-profiled users
(``profiles``, ``profile_attributes``), the night's rejects, the valid events that arrived (``events``)
and the files read (``input_files``); and across nights ``profiles_latest``, ``state`` (what each
published profile was made from) and ``nights`` (the watermark). ``work/dt=DATE/`` has the night's
manifest (what it read: ``input``) and ``gates.json`` (the stats and the gate decision).

Which files: those not in ``input_files`` of the nights before the date (path, size and modification time),
or every file on a full read (core.nightly.full_read_reason: the first night, another model or other
document-shaping ingest settings than the last night's, or nightly.incremental off). A re-run of a date
reads the same files and selects the same users.

Order of the publish: one commit per table, ``nights`` last. A night that dies in between publishes
nothing: the next night first sets back what it committed (IcebergStore.recover); with the Parquet
folders, re-running the date replaces what it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core.config import to_dict
from conf_profile.core.nightly import (
    changed_mask,
    check_gates,
    file_listing,
    full_read_reason,
    ingest_settings_hash,
    new_files,
    partition_stats,
    watermark_since,
)
from conf_profile.core.privacy import id_key, pseudonymize
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.fs import Loc, location
from conf_profile.stages.infer import STUDENT_CALIBRATION, attributes_table, check_model, profile_users
from conf_profile.storage import lease, read_documents, record_stage, write_text_atomic
from conf_profile.tables import open_store

LEASE = ".lease"  # held while a night runs: two nights never publish to one store at once


class GateFailure(RuntimeError):
    """A quality gate failed: nothing was published."""


def default_calibration(model: str) -> Loc | None:
    """The calibrator of the run that trained ``model`` (``<run>/models/<name>``, a folder or a URI), when
    there is one: its calibration_student.json when that was refitted on gold users for this model
    (infer.gold), else its calibration.json."""
    folder = location(model).resolve()
    run = folder.parent.parent
    student = run / STUDENT_CALIBRATION
    if student.exists() and (_read_json(student) or {}).get("fitted_for") == folder.name:
        return student
    candidate = run / "calibration.json"
    return candidate if candidate.exists() else None


def run_nightly(cfg: Config, logs: str, date: str, model: str, calibration_file: str | None = None) -> dict[str, Any]:
    """One night under the store's lease (a second night started meanwhile fails with LeaseHeld)."""
    root = Path(cfg.nightly.root)
    with lease(root / LEASE, {"job": "nightly", "date": date}):
        return _night(cfg, root, logs, date, model, calibration_file)


def _night(cfg: Config, root: Path, logs: str, date: str, model: str, calibration_file: str | None) -> dict[str, Any]:
    started = time.monotonic()
    job_start = datetime.now(UTC)
    store = open_store(cfg.nightly)
    undone = store.recover()  # a publish killed between two commits is undone before anything is read
    if undone:
        _log(f"undid the unfinished publish of an earlier night in {', '.join(undone)}")
    state = store.watermark()
    since = watermark_since(state, date)  # WatermarkError before any work
    cal_path = location(calibration_file) if calibration_file else default_calibration(model)
    model = check_model(model, cfg.models.cache_dir)  # a model at a URI: its copy in the models cache
    if cal_path is not None and not cal_path.exists():
        raise FileNotFoundError(f"--calibration {cal_path} does not exist")
    calibration = _read_json(cal_path) if cal_path else None
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    work = root / "work" / f"dt={date}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    from conf_profile.log_input import resolve_input
    from conf_profile.stages.ingest import run_ingest

    key = id_key(cfg)
    published = store.state_before(date)  # in the id space of the tables: pseudonyms when they carry them
    listed = resolve_input(logs, cfg.ingest.format)
    files = file_listing(listed)
    ingest_hash = ingest_settings_hash(cfg.ingest)
    full = full_read_reason(cfg.nightly.incremental, store.night_before(date), model, ingest_hash)
    if full:
        tonight, prior = listed, None
        _log(f"{date}: reading every input file ({len(files):,}): {full}")
    else:
        new = new_files(files, store.seen_files(date))
        tonight = listed.only(set(new.column("path").to_pylist()))
        _log(f"{date}: {new.num_rows:,} of {files.num_rows:,} input files arrived since the last night")

        def prior(users: pa.Array) -> pa.Table:  # the stored events of tonight's users, by their ids in the store
            if key is None:
                return store.events_of(users, date)
            stored = pseudonymize(pa.table({"user_id": users}), key).column("user_id").combine_chunks()
            events = store.events_of(stored, date)
            back = pc.index_in(events.column("user_id"), value_set=stored)
            return events.set_column(0, "user_id", users.take(back))

    events_file = work / "events.parquet"
    ingest = run_ingest(cfg.ingest, logs, work, cfg.ray, log_input=tonight, prior=prior, events_out=events_file)
    record_stage(work, "ingest", {**ingest, "status": "ok"}, to_dict(cfg))
    docs = read_documents(work, ["user_id", "document", "content_hash", "last_event_time"])
    newest = pc.max(docs.column("last_event_time")).as_py() if docs.num_rows else None
    keyed = pseudonymize(docs.select(["user_id", "content_hash"]), key) if key is not None else docs
    docs = docs.filter(changed_mask(keyed, published, model))
    _log(f"{date}: {docs.num_rows:,} of {ingest['users_out']:,} users read are new or have a changed document")

    selected = docs.select(["user_id", "document", "content_hash"])
    profiles, entry = profile_users(cfg, selected, model, calibration, f"nightly-{date}")
    store.check_schema(profiles.schema)
    previous = store.previous_profiles(date)
    columns = ["error", *taxonomy.attribute_names]
    stats = partition_stats(profiles.select(columns).to_pylist(), taxonomy.attribute_names)
    prev_stats = partition_stats(previous.select(columns).to_pylist(), taxonomy.attribute_names) if previous else None
    n = cfg.nightly
    failures = check_gates(stats, prev_stats, n.max_parse_failure_rate, n.max_abstain_rate, n.max_drift,
                           n.min_users_for_drift)  # fmt: skip
    gates = {"date": date, "since": since, "stats": stats, "previous": prev_stats, "failures": failures,
             "thresholds": to_dict(n), "published": not failures}  # fmt: skip
    write_text_atomic(work / "gates.json", json.dumps(gates, indent=2, default=str) + "\n")
    if failures:
        record_stage(work, "nightly", {**entry, "status": "gate_failed", "failures": failures}, to_dict(cfg))
        raise GateFailure(f"{date}: quality gates failed, nothing published: {'; '.join(failures)} "
                          f"(details in {work / 'gates.json'})")  # fmt: skip

    if key is not None:  # privacy.pseudonymize_ids: every published table carries pseudonyms
        profiles = pseudonymize(profiles, key)
        pq.write_table(pseudonymize(pq.read_table(events_file), key), events_file)
    # The watermark never passes the job's start: an event stamped in the future (clock skew, accepted up to
    # ingest.max_future_days) must not hide the activity that happens before that time.
    mark = state["last_event_time"] if state and date > state["date"] else since
    newest = min(newest, job_start) if newest is not None else None
    if newest is not None and (mark is None or newest > _utc(mark)):
        mark = newest.isoformat()
    night = {"date": date, "since": since, "last_event_time": mark, "users": profiles.num_rows,
             "published_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_id": f"nightly-{date}",
             "model": model, "ingest_hash": ingest_hash}  # fmt: skip
    read = files if full else new
    tables = {"profiles": profiles, "profile_attributes": attributes_table(profiles, taxonomy),
              "rejects": pq.read_table(work / "rejects"), "events": events_file, "input_files": read}  # fmt: skip
    latest = store.publish(date, tables, published, night, full=bool(full))
    shutil.rmtree(work / "documents", ignore_errors=True)  # the night's copy of the documents is not kept
    events_file.unlink(missing_ok=True)
    entry.update({"date": date, "since": since, "watermark": mark, "users_active": profiles.num_rows,
                  "users_in_logs": ingest["users_out"], "users_rejected": ingest["users_rejected"],
                  "input": {"files_listed": files.num_rows, "files_read": read.num_rows, "full_read": full or None,
                            "rows_read": ingest["rows_read"], "stored_events_read": ingest.get("prior_events", 0)},
                  "latest_users": latest, "gates": stats, "root": str(root), "table_format": store.format,
                  "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
    record_stage(work, "nightly", {**entry, "status": "ok"}, to_dict(cfg))
    return entry


def _utc(iso: str) -> datetime:
    """An ISO time; one without a zone (a hand-edited watermark) is UTC."""
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _read_json(path: Loc) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _log(message: str) -> None:
    print(f"nightly: {message}", flush=True)
