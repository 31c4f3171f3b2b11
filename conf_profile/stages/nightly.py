"""The nightly refresh: users with new activity since the watermark are profiled again, and their rows are
published only when the quality gates pass (conf_profile.core.nightly).

The table store (``nightly.root``) holds:
- ``profiles/dt=DATE/``, ``profile_attributes/dt=DATE/``: the night's re-profiled users (as jobs.infer);
- ``profiles_latest/``: the latest row of every user ever profiled;
- ``rejects/dt=DATE/``: the night's unusable rows and users, with reasons (jobs.ingest);
- ``watermark.json``: the newest event time published, the date, and where that night started from;
- ``work/dt=DATE/``: the night's manifest and ``gates.json`` (the stats and the gate decision).

Order of the publish: the date's partitions, then ``profiles_latest``, then the watermark; each is swapped in
atomically. A night that dies in between is re-run for the same date: it starts from the same watermark,
selects the same users and replaces what it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core.config import to_dict
from conf_profile.core.nightly import changed_mask, check_gates, partition_stats, watermark_since
from conf_profile.core.privacy import id_key, pseudonymize
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.infer import attributes_table, check_model, profile_users
from conf_profile.storage import lease, read_documents, record_stage, write_text_atomic
from conf_profile.tables import open_store

LEASE = ".lease"  # held while a night runs: two nights never publish to one store at once


class GateFailure(RuntimeError):
    """A quality gate failed: nothing was published."""


def default_calibration(model: str) -> Path | None:
    """The calibration.json of the run that trained ``model`` (``<run>/models/<name>``), when there is one."""
    candidate = Path(model).resolve().parent.parent / "calibration.json"
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
    state = store.watermark()
    since = watermark_since(state, date)  # WatermarkError before any work
    model = check_model(model)
    cal_path = Path(calibration_file) if calibration_file else default_calibration(model)
    if cal_path is not None and not cal_path.exists():
        raise FileNotFoundError(f"--calibration {cal_path} does not exist")
    calibration = _read_json(cal_path) if cal_path else None
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    work = root / "work" / f"dt={date}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    from conf_profile.stages.ingest import run_ingest

    ingest = run_ingest(cfg.ingest, logs, work, cfg.ray)
    record_stage(work, "ingest", {**ingest, "status": "ok"}, to_dict(cfg))
    docs = read_documents(work, ["user_id", "document", "content_hash", "last_event_time"])
    newest = pc.max(docs.column("last_event_time")).as_py() if docs.num_rows else None
    key = id_key(cfg)
    published = store.state_before(date)  # in the id space of the tables: pseudonyms when they carry them
    keyed = pseudonymize(docs.select(["user_id", "content_hash"]), key) if key is not None else docs
    docs = docs.filter(changed_mask(keyed, published, model))
    _log(f"{date}: {docs.num_rows:,} of {ingest['users_out']:,} users are new or have a changed document")

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
    # The watermark never passes the job's start: an event stamped in the future (clock skew, accepted up to
    # ingest.max_future_days) must not hide the activity that happens before that time.
    mark = state["last_event_time"] if state and date > state["date"] else since
    newest = min(newest, job_start) if newest is not None else None
    if newest is not None and (mark is None or newest > _utc(mark)):
        mark = newest.isoformat()
    night = {"date": date, "since": since, "last_event_time": mark, "users": profiles.num_rows,
             "published_at": datetime.now(UTC).isoformat(timespec="seconds"), "run_id": f"nightly-{date}"}  # fmt: skip
    latest = store.publish(date, profiles, attributes_table(profiles, taxonomy), pq.read_table(work / "rejects"),
                           published, night)  # fmt: skip
    shutil.rmtree(work / "documents", ignore_errors=True)  # the night's copy of the documents is not kept
    entry.update({"date": date, "since": since, "watermark": mark, "users_active": profiles.num_rows,
                  "users_in_logs": ingest["users_out"], "users_rejected": ingest["users_rejected"],
                  "latest_users": latest, "gates": stats, "root": str(root), "table_format": store.format,
                  "seconds": round(time.monotonic() - started, 1)})  # fmt: skip
    record_stage(work, "nightly", {**entry, "status": "ok"}, to_dict(cfg))
    return entry


def _utc(iso: str) -> datetime:
    """An ISO time; one without a zone (a hand-edited watermark) is UTC."""
    t = datetime.fromisoformat(iso)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _log(message: str) -> None:
    print(f"nightly: {message}", flush=True)
