"""Write the built-in synthetic user-log data set (Parquet) with its hidden truth.

    python -m jobs.make_logs --users 1000 --out data/synth [--seed 0] [--bad-fraction 0.02] [--files 4]

Writes OUT/logs/part-*.parquet (the logs), OUT/truth.parquet (one row per user: the hidden profile),
OUT/bad_rows.parquet (event_id and kind of each malformed row injected) and OUT/dataset.json (counts).
Same arguments, same bytes. Without --out, writes to <run-dir>/synthetic.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conf_profile.cli import fail, job_parser, load_config
from conf_profile.core.config import to_dict
from conf_profile.core.settings import DataConfig
from conf_profile.storage import open_run_dir, record_stage
from conf_profile.synthetic.dataset import write_dataset


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.make_logs", __doc__)
    parser.add_argument("--users", type=int, help=f"number of users (default: data.users = {DataConfig.users})")
    parser.add_argument("--out", help="output folder (default: <run-dir>/synthetic)")
    parser.add_argument("--seed", type=int, help=f"random seed (default: data.seed = {DataConfig.seed})")
    parser.add_argument(
        "--bad-fraction",
        type=float,
        help=f"malformed rows added per good row (default: data.bad_fraction = {DataConfig.bad_fraction})",
    )
    parser.add_argument("--files", type=int, help=f"number of log files (default: data.files = {DataConfig.files})")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    flags = {"users": args.users, "seed": args.seed, "bad_fraction": args.bad_fraction, "files": args.files}
    cfg = load_config(args, [f"data.{k}={v}" for k, v in flags.items() if v is not None])
    run_dir = open_run_dir(args.run_dir, cfg.run.runs_root) if args.run_dir or not args.out else None
    if not args.out and not isinstance(run_dir, Path):
        fail(f"the generated logs are written to a local folder, and the run directory {run_dir} is not one: "
             "give --out")  # fmt: skip
    out = args.out or str(run_dir / "synthetic")
    d = cfg.data
    try:
        summary = write_dataset(
            out, d.users, seed=d.seed, bad_fraction=d.bad_fraction, files=d.files, overwrite=args.overwrite
        )
    except FileExistsError as exc:
        fail(str(exc))
    if run_dir is not None:
        record_stage(run_dir, "make_logs", {"out": out, **summary}, to_dict(cfg))
    print(json.dumps({"out": out, **summary}, indent=2), file=sys.stdout)


if __name__ == "__main__":
    main()
