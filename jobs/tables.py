"""The nightly store's Iceberg tables: their history, a rollback of bad nights, and reads as of a night.

    python -m jobs.tables history [--out DIR]
    python -m jobs.tables rollback --before YYYY-MM-DD [--out DIR]
    python -m jobs.tables read TABLE [--as-of YYYY-MM-DD] [--to FILE.parquet] [--out DIR]

--out is the store (nightly.root, default ./nightly; the catalog from nightly.catalog, by default the
SQLite file <out>/catalog.db). Tables: profiles, profile_attributes, rejects (partitioned by dt),
profiles_latest, state, nights (one row per published night).

history   every snapshot of every table on its current line: the night that committed it, the operation,
          the time and the records
rollback  every table back to its last snapshot of a night before --before (a table with none is emptied);
          the next night then starts from there (its watermark and content-hash state included). Takes the
          store's lease: it never runs while a night is publishing (exit 4)
read      the table now, or as it was after the night --as-of; prints its rows count and the first rows, or
          writes it to --to
Exit status: 0 done, 2 bad input or configuration (no such table, not an Iceberg store), 4 the store is held.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from conf_profile.cli import fail, job_parser, load_config

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.tables", __doc__)
    parser.add_argument("command", choices=("history", "rollback", "read"))
    parser.add_argument("table", nargs="?", help="read: the table to read")
    parser.add_argument("--out", metavar="DIR", help="the table store (nightly.root, default ./nightly)")
    parser.add_argument("--before", metavar="YYYY-MM-DD", help="rollback: undo this night and every later one")
    parser.add_argument("--as-of", metavar="YYYY-MM-DD", help="read: the table as it was after this night")
    parser.add_argument("--to", metavar="FILE", help="read: write the rows to this Parquet file")
    args = parser.parse_args(argv)
    if args.command == "rollback" and not args.before:
        fail("rollback needs --before YYYY-MM-DD (the first night to undo)")
    if args.command == "read" and not args.table:
        fail("read needs a TABLE: profiles, profile_attributes, rejects, profiles_latest, state or nights")
    for flag in ("before", "as_of"):
        value = getattr(args, flag, None)
        if value is not None and not DATE.fullmatch(value):
            fail(f"--{flag.replace('_', '-')} {value}: use YYYY-MM-DD")
    cfg = load_config(args, [f"nightly.root={args.out}"] if args.out else [])
    if cfg.nightly.table_format != "iceberg":
        fail(f"nightly.table_format is {cfg.nightly.table_format}: history, rollback and as-of reads need iceberg")
    root = Path(cfg.nightly.root)
    if not cfg.nightly.catalog and not (root / "catalog.db").exists():
        fail(f"{root}: no catalog.db there (not a nightly store; give --out)")
    from conf_profile.storage import LeaseHeld, lease
    from conf_profile.tables import TableError, open_store

    store = open_store(cfg.nightly)
    try:
        if args.command == "history":
            for row in store.history():
                when = datetime.fromtimestamp(row["committed_at_ms"] / 1000, UTC).isoformat(timespec="seconds")
                print(f"{row['table']:20s} {row['snapshot_id']:>20d} night {row['night'] or '-':10s} "
                      f"{row['operation'] or '-':9s} {when} records {row['total_records']}")  # fmt: skip
        elif args.command == "rollback":
            with lease(root / ".lease", {"job": "tables rollback", "before": args.before}):
                done = store.rollback(before=args.before)
            print(json.dumps(done, indent=2))
        else:
            table = store.read(args.table, as_of=args.as_of)
            if args.to:
                import pyarrow.parquet as pq

                pq.write_table(table, args.to)
                print(f"{table.num_rows:,} rows of {args.table} to {args.to}")
            else:
                print(f"{table.num_rows:,} rows of {args.table}" + (f" as of {args.as_of}" if args.as_of else ""))
                for row in table.slice(0, 5).to_pylist():
                    print(json.dumps(row, default=str, ensure_ascii=False))
    except TableError as exc:
        fail(str(exc))
    except LeaseHeld as exc:
        fail(str(exc), status=4)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
