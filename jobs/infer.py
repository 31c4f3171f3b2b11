"""Batch inference: the student profiles users, on vLLM actors through Ray Data LLM.

    python -m jobs.infer --model DIR [--date YYYY-MM-DD] [--eval-name NAME] [--gold FILE]
                         [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

Reads <run-dir>/documents/ (jobs.ingest; without --run-dir the latest run) and, when present,
<run-dir>/calibration.json (the level -> confidence map). Writes <run-dir>/profiles/dt=DATE/ (one row per
user: user_id; per attribute <attr>, <attr>_confidence, <attr>_level, <attr>_evidence; rationale; error;
model, taxonomy_version, run_id, generated_at) and <run-dir>/profile_attributes/dt=DATE/ (long form).
DATE defaults to today (UTC); re-running a date replaces its partition. With --eval-name NAME it writes
<run-dir>/predictions/NAME/ instead (long form), which jobs.evaluate reports as a stage.
--gold FILE (infer.gold; truth format: user_id + one column per attribute) also profiles those users and
refits the confidence of the student's levels on its answers for them (isotonic); the tables carry that
confidence, <run-dir>/calibration_student.json keeps the calibrator (jobs.nightly applies it to this
model), and the gold users are left out of predictions/.
Settings: infer.* (engine, temperature, max_tokens, max_users, exclude_labeled, gold).
"""

from __future__ import annotations

import re

from conf_profile.cli import fail, job_parser, load_run_config, run_stage


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.infer", __doc__)
    parser.add_argument(
        "--model", required=True, metavar="DIR", help="the student model folder (models/sft or models/rl)"
    )
    parser.add_argument("--date", metavar="YYYY-MM-DD", help="partition date (default: today, UTC)")
    parser.add_argument("--eval-name", metavar="NAME", help="write predictions/NAME/ for jobs.evaluate instead")
    parser.add_argument("--gold", metavar="FILE", help="truth-format Parquet: refit the levels' confidence on it")
    args = parser.parse_args(argv)
    if args.date and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        fail(f"--date {args.date}: use YYYY-MM-DD")
    if args.eval_name and not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", args.eval_name):
        fail(f"--eval-name {args.eval_name}: use lower-case letters, digits and _")
    cfg = load_run_config(args, [f"infer.gold={args.gold}"] if args.gold else [])
    from conf_profile.stages.infer import run_infer  # after the checks
    from conf_profile.storage import DOCUMENTS

    stage = f"infer_{args.eval_name}" if args.eval_name else "infer"
    run_stage(stage, args, cfg, lambda c, run_dir: run_infer(c, run_dir, args.model, args.date, args.eval_name),
              (DOCUMENTS,))  # fmt: skip


if __name__ == "__main__":
    main()
