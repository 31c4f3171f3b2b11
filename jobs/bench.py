"""Benchmarks: the Ray job against a plain single-process baseline, side by side in one invocation.

    python -m jobs.bench ingest --users 100000 [--seed 0] [--bad-fraction 0.02] [--data DIR]
    python -m jobs.bench ingest-grouping --users 100000   # hash partitioning vs Ray Data groupby

ingest: generates the built-in logs (cached under runs/bench/), runs the single-process pyarrow ingest and
the Ray ingest job on the same files, each in its own process, checks that both wrote the same documents
and rejects, and prints wall time, users/s and peak memory (PSS of the whole process tree) of both and the
ratios. Numbers depend on the machine and its load; compare only runs of one invocation.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.measure import run_measured
from conf_profile.synthetic.dataset import write_dataset


def bench_ingest(args: argparse.Namespace) -> None:
    data = _data(args)
    work = Path("runs/bench") / "ingest-work"
    shutil.rmtree(work, ignore_errors=True)
    py = sys.executable
    runs = {
        "baseline (1 process, pyarrow)": (
            run_measured(
                [py, "-m", "conf_profile.ingest_local", "--logs", str(data / "logs"), "--out", str(work / "base")]
            ),
            work / "base",
        ),
        "ray job (jobs.ingest)": (
            run_measured([py, "-m", "jobs.ingest", "--logs", str(data / "logs"), "--run-dir", str(work / "ray")]),
            work / "ray",
        ),
    }
    for name, (m, _) in runs.items():
        if m.returncode != 0:
            sys.exit(f"bench: {name} failed:\n{m.output[-3000:]}")
    (base, base_dir), (ray_run, ray_dir) = runs.values()
    same = _same_output(base_dir, ray_dir)
    print(f"\ningest benchmark: {args.users:,} users, input {data / 'logs'}")
    print(f"{'':32s} {'seconds':>9s} {'users/s':>9s} {'peak MiB':>9s}")
    for name, (m, _) in runs.items():
        print(f"{name:32s} {m.seconds:9.1f} {args.users / m.seconds:9.0f} {m.peak_mib:9.0f}")
    print(
        f"ratio ray/baseline: time {ray_run.seconds / base.seconds:.2f}x, peak memory "
        f"{ray_run.peak_mib / base.peak_mib:.2f}x; outputs identical: {same}"
    )
    if not same:
        sys.exit(1)


def bench_grouping(args: argparse.Namespace) -> None:
    """The ingest job (hash partitioning through storage) against the textbook Ray Data plan
    (``groupby("user_id").map_groups``) on the same logs. The groupby variant writes documents only (its
    rejects would need a second output), so it does less work than the job it is compared with."""
    data = _data(args)
    work = Path("runs/bench") / "grouping-work"
    shutil.rmtree(work, ignore_errors=True)
    py = sys.executable
    hashp = run_measured([py, "-m", "jobs.ingest", "--logs", str(data / "logs"), "--run-dir", str(work / "hash")])
    group = run_measured(
        [py, "-m", "jobs.bench", "_groupby-variant", "--logs", str(data / "logs"), "--out", str(work / "groupby")]
    )
    for name, m in (("hash partitioning", hashp), ("groupby", group)):
        if m.returncode != 0:
            sys.exit(f"bench: {name} failed:\n{m.output[-3000:]}")
    docs_a = pq.read_table(work / "hash" / "documents", columns=["user_id", "content_hash"])
    docs_b = pq.read_table(work / "groupby" / "documents", columns=["user_id", "content_hash"])
    same = sorted(docs_a.to_pylist(), key=str) == sorted(docs_b.to_pylist(), key=str)
    print(f"\ningest grouping strategies: {args.users:,} users")
    print(f"{'':40s} {'seconds':>9s} {'peak MiB':>9s}")
    print(f"{'hash partitioning (jobs.ingest)':40s} {hashp.seconds:9.1f} {hashp.peak_mib:9.0f}")
    print(f"{'groupby().map_groups (documents only)':40s} {group.seconds:9.1f} {group.peak_mib:9.0f}")
    print(
        f"ratio groupby/hash: time {group.seconds / hashp.seconds:.2f}x, peak memory "
        f"{group.peak_mib / hashp.peak_mib:.2f}x; same documents: {same}"
    )


def _groupby_variant(args: argparse.Namespace) -> None:

    from conf_profile.core.ingest import group_bucket
    from conf_profile.core.settings import IngestConfig
    from conf_profile.ingest import STAGED_SCHEMA, budget_for, documents_table, limits_for, staged_dataset
    from conf_profile.logs import resolve_input
    from conf_profile.raycluster import init_ray

    cfg = IngestConfig()
    log_input = resolve_input(str(args.logs))
    init_ray()
    budget = budget_for(cfg)

    def documents(group):
        columns = {n: group.column(n).to_pylist() for n in STAGED_SCHEMA.names if n != "bucket"}
        return documents_table(group_bucket(columns, budget)[0])

    staged = staged_dataset(log_input, cfg, limits_for(cfg, datetime.now(UTC)), buckets=1)
    events = staged.filter(lambda r: r["reason"] is None)
    events.groupby("user_id").map_groups(documents, batch_format="pyarrow", num_cpus=cfg.cpus_per_task).write_parquet(
        str(args.out / "documents")
    )


def _data(args: argparse.Namespace) -> Path:
    data = args.data or Path("runs/bench") / f"logs-{args.users}-{args.seed}-{args.bad_fraction}"
    if not (data / "dataset.json").exists():
        print(f"bench: generating {args.users:,} users into {data}", file=sys.stderr)
        write_dataset(data, args.users, seed=args.seed, bad_fraction=args.bad_fraction, overwrite=True)
    return data


def _same_output(a: Path, b: Path) -> bool:
    def docs(folder: Path):
        t = pq.read_table(folder / "documents", columns=["user_id", "content_hash", "n_events"])
        return t.take(pc.sort_indices(t, [("user_id", "ascending")])).to_pylist()

    def reasons(folder: Path):
        t = pq.read_table(folder / "rejects", columns=["reason", "event_id"])
        return sorted(
            zip(t.column("reason").to_pylist(), t.column("event_id").to_pylist(), strict=True),
            key=lambda r: (r[0], r[1] or ""),
        )

    return docs(a) == docs(b) and reasons(a) == reasons(b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("ingest", "Ray ingest vs single-process pyarrow ingest"),
        ("ingest-grouping", "hash partitioning vs Ray Data groupby for ingest"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--users", type=int, default=100_000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--bad-fraction", type=float, default=0.02)
        p.add_argument("--data", type=Path, help="use these logs (a make_logs output folder) instead")
    variant = sub.add_parser("_groupby-variant", help=argparse.SUPPRESS)
    variant.add_argument("--logs", type=Path, required=True)
    variant.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    {"ingest": bench_ingest, "ingest-grouping": bench_grouping, "_groupby-variant": _groupby_variant}[args.what](args)


if __name__ == "__main__":
    main()
