"""Evaluate a run against truth: per attribute precision / recall / F1 (abstention explicit), coverage by
level, ECE, Brier and confusion matrices for every stage present, side by side.

    python -m jobs.evaluate --truth PATH [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

--truth is a Parquet file with user_id and one column per taxonomy attribute (the built-in data writes
one: <run-dir>/input/truth.parquet). Stages: teacher_single (first sample), teacher_majority (plain vote),
teacher_vote_raw and teacher_vote (confidence-weighted, before / after calibration), and every
<run-dir>/predictions/<stage>/ the student stages write. Without --run-dir, the latest run.
Writes <run-dir>/report/metrics.json and report/index.html with reliability, level and F1 plots.
--users PATH (Parquet with user_id) scores only those users, every stage on the same ones, into
<run-dir>/<--report> (e.g. the references' test users: python -m jobs.references).
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage
from conf_profile.stages.evaluate import run_evaluate


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.evaluate", __doc__)
    parser.add_argument("--truth", required=True, metavar="PATH", help="truth Parquet: user_id + attribute columns")
    parser.add_argument("--users", metavar="PATH", help="score only these users (Parquet with user_id)")
    parser.add_argument("--report", default="report", metavar="NAME",
                        help="report folder in the run directory (default: report)")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.report.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--report {args.report!r}: a folder name (letters, digits, - and _)")
    stage = "evaluate" if args.report == "report" else f"evaluate_{args.report}"
    run_dir = run_stage(stage, args, load_run_config(args),
                        lambda cfg, rd: run_evaluate(cfg, rd, args.truth, args.users, args.report))  # fmt: skip
    print(f"report: {run_dir / args.report / 'index.html'}")


if __name__ == "__main__":
    main()
