"""Reference predictions for the report: the majority class and a logistic regression on the documents.

    python -m jobs.references --truth PATH [--run-dir DIR] [--config FILE] [--set KEY=VALUE ...]

Splits users in halves by crc32 of the id, learns from the train half's true labels and predicts the test
half (without the users the teacher labeled) into <run-dir>/predictions/ref_majority and ref_logreg;
writes the test users to <run-dir>/references/test_users.parquet. Score everything on those users with
    python -m jobs.evaluate --truth PATH --users <run-dir>/references/test_users.parquet --report report_test
Needs the run's documents/ (ingest) and scikit-learn (installed by `make setup`). See conf_profile/stages/baselines.py.
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage
from conf_profile.stages.baselines import run_references


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.references", __doc__)
    parser.add_argument("--truth", required=True, metavar="PATH", help="truth Parquet: user_id + attribute columns")
    args = parser.parse_args(argv)
    run_stage("references", args, load_run_config(args), lambda cfg, rd: run_references(cfg, rd, args.truth))


if __name__ == "__main__":
    main()
