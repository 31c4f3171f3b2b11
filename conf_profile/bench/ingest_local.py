"""Single-process ingest with plain pyarrow: the baseline that the Ray job is measured against.

Same row functions and same outputs as conf_profile.stages.ingest, but everything in one process: the staged rows
of the whole input are held in memory (as Arrow), sorted by user and grouped. Fine for small inputs and
for checking the Ray job's output; its memory grows with the input.

    python -m conf_profile.bench.ingest_local --logs PATH --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conf_profile.core.ingest import validate_rows
from conf_profile.core.settings import IngestConfig
from conf_profile.log_input import resolve_input
from conf_profile.stages.ingest import (
    STAGED_SCHEMA,
    budget_for,
    group_and_write,
    limits_for,
    part_name,
    publish,
    reject_unreadable_files,
    summarize,
)

CHUNK_ROWS = 200_000


def run_ingest_local(cfg: IngestConfig, logs: str, out_dir: Path) -> dict[str, Any]:
    started_at, started = datetime.now(UTC), time.monotonic()
    log_input = resolve_input(logs, cfg.format)
    limits = limits_for(cfg, started_at)
    staged_parts = [
        pa.table(validate_rows(rows, limits, 1, cfg.mapping), schema=STAGED_SCHEMA)
        for split in log_input.splits(cfg.split_mb)
        for rows in log_input.read_split(split, cfg.batch_rows)
    ]
    staged = pa.concat_tables(staged_parts) if staged_parts else STAGED_SCHEMA.empty_table()
    staged = staged.take(pc.sort_indices(staged, [("user_id", "ascending")]))
    staging = out_dir / "_staging" / "ingest"
    shutil.rmtree(staging, ignore_errors=True)
    budget = budget_for(cfg)
    counts = [
        group_and_write(staged.slice(start, end - start), staging, part_name(i), budget)
        for i, (start, end) in enumerate(_chunks(staged))
    ]
    counts.append(reject_unreadable_files(staging, log_input))
    entry = summarize(counts)
    publish(staging, out_dir)
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def _chunks(staged: pa.Table):
    """Row ranges of about CHUNK_ROWS rows that never split a user."""
    users = staged.column("user_id")
    start, n = 0, staged.num_rows
    while start < n:
        end = min(start + CHUNK_ROWS, n)
        while end < n and users[end].as_py() == users[end - 1].as_py():
            end += 1
        yield start, end
        start = end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run_ingest_local(IngestConfig(), args.logs, args.out), indent=2))


if __name__ == "__main__":
    main()
