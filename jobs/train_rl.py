"""Confidence-guided unsupervised RL (GRPO) of the student on Ray Train: rl/ + models/sft/ -> models/rl/.

    python -m jobs.train_rl [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

Reads <run-dir>/rl/train.parquet (jobs.aggregate: the difficulty-filtered users with their teacher votes)
and starts from <run-dir>/models/sft/ (jobs.train_sft); without --run-dir the latest run. For each user,
train_rl.num_generations rollouts vote among themselves (confidence-weighted, optionally with the teacher
vote as an extra voter: train_rl.teacher_voter_weight); rewards: format gate x (accuracy against that
vote, weighted by its vote share + train_rl.calibration_weight x (1 - Brier of the stated levels)).
Logs per step the reward components, the agreement of the pseudo-labels with the teacher vote, the share of
groups with zero reward spread, KL and completion length. DeepSpeed, workers, checkpoints and resume as in
jobs.train_sft (train_rl.* settings). Writes <run-dir>/models/rl/ and the metrics into the manifest.
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage


def main(argv: list[str] | None = None) -> None:
    args = job_parser("python -m jobs.train_rl", __doc__).parse_args(argv)
    cfg = load_run_config(args)
    from conf_profile.stages.train_rl import READS, run_train_rl  # after the config checks

    run_dir = run_stage("train_rl", args, cfg, run_train_rl, READS)
    if (run_dir / "models" / "rl").exists():
        print(f"model: {run_dir / 'models' / 'rl'}")


if __name__ == "__main__":
    main()
