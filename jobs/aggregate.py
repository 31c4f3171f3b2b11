"""Aggregate teacher samples: confidence-weighted votes, calibration, and the SFT and RL sets.

    python -m jobs.aggregate [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]
                             [--calibration FILE] [--gold FILE]

Reads <run-dir>/teacher_samples/ (jobs.label) and <run-dir>/documents/ (jobs.ingest); without --run-dir
the latest run. Writes:
  votes/votes.parquet   one row per user x attribute: weighted vote, share, supporters, entropy, raw and
                        calibrated confidence, level 1-5, evidence, plus plain majority and single sample
  calibration.json      the fitted calibrator (label-free equal-frequency levels, or isotonic with --gold)
  sft/train.parquet, sft/eval.parquet   chat examples in the student's output format
  rl/train.parquet      users kept by the difficulty filter, with the teacher votes per attribute
--calibration FILE reuses a saved calibration.json instead of fitting (aggregate.calibration);
--gold FILE fits confidence to accuracy on a truth-format Parquet file (aggregate.gold).
Settings are under `aggregate.` (conf_profile/core/settings.py).
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage
from conf_profile.stages.aggregate import READS, run_aggregate


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.aggregate", __doc__)
    parser.add_argument("--calibration", metavar="FILE", help="reuse this calibration.json (no refit)")
    parser.add_argument("--gold", metavar="FILE", help="truth-format Parquet for an isotonic fit to accuracy")
    args = parser.parse_args(argv)
    extra = [f"aggregate.{k}={v}" for k, v in (("calibration", args.calibration), ("gold", args.gold)) if v]
    run_dir = run_stage("aggregate", args, load_run_config(args, extra), run_aggregate, READS)
    print(f"votes: {run_dir / 'votes'}\ncalibration: {run_dir / 'calibration.json'}")
    print(f"sft: {run_dir / 'sft'}\nrl: {run_dir / 'rl'}")


if __name__ == "__main__":
    main()
