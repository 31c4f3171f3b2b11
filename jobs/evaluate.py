"""Evaluate a run against truth: per attribute precision / recall / F1 (abstention explicit), coverage by
level, ECE, Brier and confusion matrices for every stage present, side by side.

    python -m jobs.evaluate --truth PATH [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

--truth is a Parquet file with user_id and one column per taxonomy attribute (the built-in data writes
one: <run-dir>/input/truth.parquet). Stages: teacher_single (first sample), teacher_majority (plain vote),
teacher_vote_raw and teacher_vote (confidence-weighted, before / after calibration), and every
<run-dir>/predictions/<stage>/ the student stages write. Without --run-dir, the latest run.
Writes <run-dir>/report/metrics.json and report/index.html with reliability, level and F1 plots.
"""

from __future__ import annotations

import json

from conf_profile.cli import fail, job_parser, load_config
from conf_profile.core.config import to_dict
from conf_profile.evaluate import run_evaluate
from conf_profile.runs import existing_run_dir, record_stage


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.evaluate", __doc__)
    parser.add_argument("--truth", required=True, metavar="PATH", help="truth Parquet: user_id + attribute columns")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    try:
        run_dir = existing_run_dir(args.run_dir, cfg.run.runs_root)
        entry = run_evaluate(cfg, run_dir, args.truth)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    record_stage(run_dir, "evaluate", {**entry, "status": "ok"}, to_dict(cfg))
    print(json.dumps(entry, indent=2))
    print(f"report: {run_dir / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
