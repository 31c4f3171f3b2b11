"""Write the synthetic data set to disk: ``logs/part-*.parquet``, ``truth.parquet``, ``bad_rows.parquet``.

Streams block by block, so 1M users need no more memory than a few blocks. Events are spread over the
log files at random (like time-partitioned production logs, a user's events are not together in one file).
The whole folder appears at once: it is written under ``<out>.partial`` and renamed when complete.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conf_profile.storage import write_data_folder
from conf_profile.synthetic.generator import (
    BAD_KINDS,
    BAD_ROWS_SCHEMA,
    BLOCK_USERS,
    LOG_SCHEMA,
    TRUTH_SCHEMA,
    iter_blocks,
)

ROW_GROUP_ROWS = 65_536


def write_dataset(
    out: str | Path, users: int, seed: int = 0, bad_fraction: float = 0.0, files: int = 4, overwrite: bool = False
) -> dict[str, Any]:
    """Generate and write the data set; returns the summary also saved as ``<out>/dataset.json``."""
    if files < 1:
        raise ValueError(f"files must be >= 1, got {files}")

    def fill(staging: Path) -> dict[str, Any]:
        started = time.monotonic()
        summary = _write_all(staging, users, seed, bad_fraction, files, started)
        summary["seconds"] = round(time.monotonic() - started, 1)
        return summary

    return write_data_folder(out, fill, overwrite)


def _write_all(root: Path, users: int, seed: int, bad_fraction: float, files: int, started: float) -> dict[str, Any]:
    writers = [
        pq.ParquetWriter(root / "logs" / f"part-{k:05d}-of-{files:05d}.parquet", LOG_SCHEMA) for k in range(files)
    ]
    truth_writer = pq.ParquetWriter(root / "truth.parquet", TRUTH_SCHEMA)
    bad_writer = pq.ParquetWriter(root / "bad_rows.parquet", BAD_ROWS_SCHEMA)
    pending: list[list[pa.Table]] = [[] for _ in range(files)]
    rows = bad = done = 0
    bad_by_kind = dict.fromkeys(BAD_KINDS, 0)
    try:
        for block_no, block in enumerate(iter_blocks(users, seed, bad_fraction)):
            assign = np.random.default_rng([seed, block_no]).integers(files, size=block.logs.num_rows)
            for k in range(files):
                pending[k].append(block.logs.filter(pa.array(assign == k)))
                if sum(t.num_rows for t in pending[k]) >= ROW_GROUP_ROWS:
                    writers[k].write_table(pa.concat_tables(pending[k]), row_group_size=ROW_GROUP_ROWS)
                    pending[k] = []
            truth_writer.write_table(block.truth)
            bad_writer.write_table(block.bad_rows)
            for kind in block.bad_rows.column("kind").to_pylist():
                bad_by_kind[kind] += 1
            rows += block.logs.num_rows
            bad += block.bad_rows.num_rows
            done += block.truth.num_rows
            _progress(done, users, rows, started, final=done == users)
        for k in range(files):
            if pending[k]:
                writers[k].write_table(pa.concat_tables(pending[k]), row_group_size=ROW_GROUP_ROWS)
    finally:
        for w in [*writers, truth_writer, bad_writer]:
            w.close()
    return {
        "users": users,
        "seed": seed,
        "bad_fraction": bad_fraction,
        "files": files,
        "rows": rows,
        "bad_rows": bad,
        "bad_rows_by_kind": bad_by_kind,
        "block_users": BLOCK_USERS,
    }


def _progress(done: int, users: int, rows: int, started: float, final: bool) -> None:
    if not final and done % (BLOCK_USERS * 25):
        return
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"make_logs: {done:,}/{users:,} users, {rows:,} rows, {elapsed:.0f}s ({done / elapsed:,.0f} users/s)",
        file=sys.stderr,
        flush=True,
    )
