"""Ingest on Ray Data: raw user logs -> ``documents/`` (one row per user) + ``rejects/`` (with reasons).

Grouping strategy: hash partitioning through the run's storage, in two Ray Data passes.

1. One task per split (a run of Parquet row groups, or a JSONL file) streams its rows batch by batch,
   validates them (core.ingest.validate_rows) and Ray Data writes the staged rows partitioned by
   ``bucket = crc32(user_id) % B``. A task holds one batch at a time, whatever the file sizes.
2. One task per bucket reads that bucket alone, groups it by user and builds the documents
   (core.ingest.group_bucket). B grows with the input (``ingest.bucket_mb`` of input per bucket), so a
   task's memory does not.

Why this and not ``groupby("user_id").map_groups``: measured on this 2-core machine with
``python -m jobs.bench ingest-grouping --users 100000``, the groupby plan took 172 s against 42 s for this
job (4.1x), with the same peak memory (both capped by the 2 GiB local object store), although it wrote
documents only. And with whole files as read units, an earlier version of this job grew from 3.9 GiB at
100k users to 7.4 GiB at 1M; with row-group splits it is 2.0 and 2.2 GiB (``jobs.bench ingest``).
Outputs are written under ``_staging/`` with deterministic names and moved into place at the end, so a
crash never leaves a half-written ``documents/``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from conf_profile import fs
from conf_profile.core.documents import DocumentBudget
from conf_profile.core.events import Limits, parse_time_ms
from conf_profile.core.ingest import NO_USER_BUCKET, group_bucket, validate_rows
from conf_profile.core.mapping import InputMapping
from conf_profile.core.settings import Config, IngestConfig, RayConfig
from conf_profile.fs import Loc, location
from conf_profile.log_input import LogInput, LogInputError, resolve_input
from conf_profile.storage import (
    DOCUMENT_SCHEMA,
    DOCUMENTS,
    EVENT_SCHEMA,
    REJECT_SCHEMA,
    REJECTS,
    RunTable,
    TableWriter,
    write_table_atomic,
)

STAGED_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("event_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("source", pa.string()),
        ("text", pa.string()),
        ("reason", pa.string()),
        ("raw", pa.string()),
        ("bucket", pa.int32()),
    ]
)


def limits_for(cfg: IngestConfig, started: datetime) -> Limits:
    max_time = started + timedelta(days=cfg.max_future_days)
    min_time = parse_time_ms(cfg.min_event_time)
    assert min_time is not None  # IngestConfig.validate checked it
    return Limits(cfg.max_field_chars, cfg.max_line_chars, int(max_time.timestamp() * 1000), min_time)


def budget_for(cfg: IngestConfig) -> DocumentBudget:
    return DocumentBudget(total_tokens=cfg.token_budget, source_tokens=dict(cfg.source_budgets))


def bucket_count(cfg: IngestConfig, log_input: LogInput) -> int:
    if cfg.buckets:
        return cfg.buckets
    return max(1, math.ceil(log_input.total_bytes / (cfg.bucket_mb * 2**20)))


def run_ingest(
    cfg: IngestConfig, logs: str, run_dir: Loc, ray_cfg: RayConfig | None = None, *,
    log_input: LogInput | None = None, prior: Callable[[pa.Array], pa.Table] | None = None,
    events_out: Loc | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Run both passes on the connected Ray cluster; returns the manifest entry.

    For the nightly refresh, which reads only the files that arrived since the last night: ``log_input``
    is those files (default: every file under ``logs``); ``prior(user_ids)`` returns the earlier events
    (EVENT_SCHEMA) of the users in them, merged into their buckets before the documents are built, so a
    document is the user's whole history; ``events_out`` receives the valid events read (EVENT_SCHEMA),
    for the store to keep."""
    import ray

    from conf_profile.raycluster import init_ray

    started_at = datetime.now(UTC)
    started = time.monotonic()
    log_input = log_input if log_input is not None else resolve_input(logs, cfg.format)
    buckets = bucket_count(cfg, log_input)
    staging = run_dir / "_staging" / "ingest"
    fs.remove(staging)
    init_ray(ray_cfg)
    ray.data.DataContext.get_current().target_max_block_size = cfg.block_mb * 2**20
    limits = limits_for(cfg, started_at)
    _log(
        f"{len(log_input.paths)} {log_input.format} file(s), {log_input.total_bytes / 2**20:.1f} MiB, {buckets} buckets"
    )

    if log_input.paths:
        staged = staged_dataset(log_input, cfg, limits, buckets)
        try:
            staged.write_parquet(str(staging / "staged"), partition_cols=["bucket"])
        except Exception as exc:  # worker boundary: a read error anywhere fails the pass; say where and what
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise LogInputError(f"--logs {logs!r}: reading failed: {first[:500]}") from exc
    _log(f"pass 1 (validate, partition) done in {time.monotonic() - started:.0f}s")
    extra: dict[str, Any] = {}
    known = None
    if prior is not None:
        earlier = add_prior_events(staging / "staged", prior, buckets)
        extra["prior_events"], known = earlier.num_rows, event_key(earlier)
        _log(f"{earlier.num_rows:,} earlier events of the users in these files read from the store")
        del earlier
    if events_out is not None:
        extra["events_kept"] = keep_events(staging / "staged", events_out, known)

    bucket_ids = [NO_USER_BUCKET, *range(buckets)]
    counts = (
        ray.data.from_items([{"bucket": b} for b in bucket_ids], override_num_blocks=len(bucket_ids))
        .map(
            _group_one_bucket,
            fn_kwargs={"staging": str(staging), "budget": budget_for(cfg)},
            num_cpus=cfg.cpus_per_task,
        )
        .take_all()
    )
    _log(f"pass 2 (group, documents) done in {time.monotonic() - started:.0f}s")
    counts.append(reject_unreadable_files(staging, log_input))
    entry = summarize(counts)
    if "prior_events" in extra:  # rows_read: the rows of the input files only
        entry["rows_read"] -= extra["prior_events"]
    entry.update(extra)
    publish(staging, run_dir)
    entry.update(logs=logs, format=log_input.format, files=len(log_input.paths), buckets=buckets)
    entry["seconds"] = round(time.monotonic() - started, 1)
    entry["started_at"] = started_at.isoformat(timespec="seconds")
    return entry


def staged_dataset(log_input: LogInput, cfg: IngestConfig, limits: Limits, buckets: int) -> Any:
    """Pass 1 as a Ray Dataset of staged rows: one task per split, streaming batch by batch."""
    import ray.data

    splits = log_input.splits(cfg.split_mb)
    return ray.data.from_items(splits, override_num_blocks=len(splits)).map_batches(
        _validate_split,
        fn_kwargs={
            "log_input": log_input,
            "limits": limits,
            "buckets": buckets,
            "batch_rows": cfg.batch_rows,
            "mapping": cfg.mapping,
        },
        batch_format="pyarrow",
        batch_size=1,
        num_cpus=cfg.cpus_per_task,
    )


def _staged_files(staged: Loc) -> list[Loc]:
    return sorted(staged.glob("bucket=*/*.parquet")) if staged.is_dir() else []


def keep_events(staged: Loc, out: Loc, known: pa.Array | None = None) -> int:
    """Write the valid staged rows (EVENT_SCHEMA) into the file ``out``, a batch at a time, leaving out the
    events in ``known`` (event_key of the events stored already: a redelivery is not kept twice); returns
    the rows."""
    import pyarrow.compute as pc

    with TableWriter(out) as writer:
        for f in _staged_files(staged):
            if f.name == PRIOR_FILE:
                continue
            for batch in fs.parquet_file(f).iter_batches(columns=[*EVENT_SCHEMA.names, "reason"]):
                valid = pa.Table.from_batches([batch])
                valid = valid.filter(pc.is_null(valid.column("reason"))).select(EVENT_SCHEMA.names)
                if known is not None and len(known):
                    valid = valid.filter(pc.invert(pc.is_in(event_key(valid), value_set=known)))
                writer.write(valid.cast(EVENT_SCHEMA))
        writer.commit(empty=EVENT_SCHEMA)
    return writer.rows


def event_key(events: pa.Table) -> pa.Array:
    """user_id and event_id in one string per row (a null event id stays null: never equal to another)."""
    from conf_profile.core.nightly import row_keys

    return row_keys(events, ["user_id", "event_id"])


PRIOR_FILE = "prior-events.parquet"


def add_prior_events(staged: Loc, prior: Callable[[pa.Array], pa.Table], buckets: int) -> pa.Table:
    """Stage the earlier events (``prior`` of the users staged tonight) into their users' buckets, as valid
    rows; returns them."""
    import pyarrow.compute as pc

    from conf_profile.core.ingest import bucket_of

    files = _staged_files(staged)
    users = pa.concat_tables([fs.read_table(f, columns=["user_id"]) for f in files]) if files else None
    ids = pc.unique(users.column("user_id").combine_chunks().drop_null()) if users is not None else None
    if ids is None or not len(ids):
        return EVENT_SCHEMA.empty_table()
    events = prior(ids)
    n = events.num_rows
    bucket = np.fromiter((bucket_of(u, buckets) for u in events.column("user_id").to_pylist()), np.int64, n)
    events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
    events = events.append_column("reason", pa.nulls(n, pa.string())).append_column("raw", pa.nulls(n, pa.string()))
    file_schema = pa.schema([f for f in STAGED_SCHEMA if f.name != "bucket"])  # the bucket is in the folder name
    for b in np.unique(bucket):
        folder = staged / f"bucket={int(b)}"
        write_table_atomic(events.filter(pa.array(bucket == b)).cast(file_schema), folder / PRIOR_FILE)
    return events.select(EVENT_SCHEMA.names)


def _validate_split(
    splits: pa.Table, log_input: LogInput, limits: Limits, buckets: int, batch_rows: int, mapping: InputMapping
) -> Iterator[pa.Table]:
    for split in splits.to_pylist():
        for rows in log_input.read_split(split, batch_rows):
            yield pa.table(validate_rows(rows, limits, buckets, mapping), schema=STAGED_SCHEMA)
    pa.default_memory_pool().release_unused()


def _group_one_bucket(item: dict[str, Any], staging: str, budget: DocumentBudget) -> dict[str, Any]:
    bucket = int(item["bucket"])
    folder = location(staging) / "staged" / f"bucket={bucket}"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    table = pa.concat_tables([fs.read_table(f) for f in files]) if files else STAGED_SCHEMA.empty_table()
    counts = group_and_write(table, location(staging), part_name(bucket), budget)
    del table
    pa.default_memory_pool().release_unused()
    return counts


def group_and_write(staged: pa.Table, staging: Loc, name: str, budget: DocumentBudget) -> dict[str, Any]:
    """Group staged rows (whole users only), write their documents and rejects, and count them."""
    columns = {column: staged.column(column).to_pylist() for column in STAGED_SCHEMA.names if column != "bucket"}
    documents, rejects = group_bucket(columns, budget)
    write_bucket(staging, name, documents, rejects)
    return {
        "rows": staged.num_rows,
        "documents": len(documents),
        "rows_used": sum(d["n_events"] for d in documents),
        "reject_reasons": dict(Counter(rejects["reason"])),
        "users_rejected": rejects["reason"].count("no_usable_events"),
    }


def part_name(bucket: int) -> str:
    """Deterministic file names per bucket: a retried task overwrites its own files, never duplicates.
    Bucket -1 (rows without a user id) is part-00000."""
    return f"part-{bucket + 1:05d}.parquet"


def write_bucket(staging: Loc, name: str, documents: list[dict[str, Any]], rejects: dict[str, list]) -> None:
    """Write one task's documents and rejects (temp file, then moved in)."""
    for folder, table in (
        ("documents", documents_table(documents)),
        ("rejects", pa.table(rejects, schema=REJECT_SCHEMA)),
    ):
        if table.num_rows:
            write_table_atomic(table, staging / folder / name)


def documents_table(documents: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [d[name] for d in documents] for name in DOCUMENT_SCHEMA.names if not name.endswith("_time")}
    columns["first_event_time"] = [d["first_event_ms"] for d in documents]
    columns["last_event_time"] = [d["last_event_ms"] for d in documents]
    return pa.table(columns, schema=DOCUMENT_SCHEMA)


def reject_unreadable_files(staging: Loc, log_input: LogInput) -> dict[str, Any]:
    """One reject row per input file that could not be opened (its rows are unknown, so uncounted)."""
    paths = [p for p, _ in log_input.unreadable]
    rejects = {
        "reason": ["unreadable_file"] * len(paths),
        "user_id": [None] * len(paths),
        "event_id": [None] * len(paths),
        "raw": [f"{p}: {e}" for p, e in log_input.unreadable],
    }
    if paths:
        write_bucket(staging, "unreadable-files.parquet", [], rejects)
    return {
        "rows": 0,
        "documents": 0,
        "rows_used": 0,
        "users_rejected": 0,
        "reject_reasons": {"unreadable_file": len(paths)} if paths else {},
    }


def summarize(counts: list[dict[str, Any]]) -> dict[str, Any]:
    reasons: Counter[str] = Counter()
    for c in counts:
        reasons.update(c["reject_reasons"])
    files_unreadable = reasons.pop("unreadable_file", 0)
    row_reasons = {k: v for k, v in sorted(reasons.items()) if k != "no_usable_events"}
    users_out = sum(c["documents"] for c in counts)
    users_rejected = sum(c["users_rejected"] for c in counts)
    return {
        "rows_read": sum(c["rows"] for c in counts),
        "rows_used": sum(c["rows_used"] for c in counts),
        "rows_rejected": sum(row_reasons.values()),
        "rows_rejected_by_reason": row_reasons,
        "users_in": users_out + users_rejected,
        "users_out": users_out,
        "users_rejected": users_rejected,
        "files_unreadable": files_unreadable,
    }


def publish(staging: Loc, run_dir: Loc) -> None:
    """Move documents/ and rejects/ into the run directory, replacing an earlier run's (on an object store
    file by file: the stage's manifest entry commits them)."""
    for folder in ("documents", "rejects"):
        source = staging / folder
        if isinstance(source, Path) and not source.exists():
            source.mkdir(parents=True)
        fs.move_tree(source, run_dir / folder)
    fs.remove(staging)
    if isinstance(staging, Path):
        with contextlib.suppress(OSError):  # other stages may be staging too
            staging.parent.rmdir()


def _log(message: str) -> None:
    print(f"ingest: {message}", file=sys.stderr, flush=True)


READS: tuple[RunTable, ...] = ()  # the raw logs, outside the run directory (input.logs or builtin_data's)
WRITES = (DOCUMENTS, REJECTS)


def run(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    from conf_profile.stages.builtin_data import logs_path

    return run_ingest(cfg.ingest, logs_path(cfg, run_dir), run_dir, cfg.ray)
