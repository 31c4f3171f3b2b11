"""SFT distillation of the student on Ray Train + DeepSpeed + TRL: sft/ -> models/sft/.

    python -m jobs.train_sft [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

Reads <run-dir>/sft/train.parquet and eval.parquet (jobs.aggregate); without --run-dir the latest run.
Trains the student (models.student) with train_sft.workers Ray Train workers, DeepSpeed ZeRO
train_sft.zero_stage (2 or 3, optional CPU offload), loss on the assistant turn only, optional LoRA;
logs step, loss, learning rate and tokens/s while it runs; checkpoints every train_sft.save_steps steps
to train_sft.storage_path (default <run-dir>/checkpoints). A re-run of an interrupted run resumes from
the last checkpoint. Writes the model to <run-dir>/models/sft/ (transformers and vLLM load it) and the
training metrics (eval loss before / after, steps, tokens, time) into the run manifest.
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage


def main(argv: list[str] | None = None) -> None:
    args = job_parser("python -m jobs.train_sft", __doc__).parse_args(argv)
    cfg = load_run_config(args)
    from conf_profile.stages.train_sft import READS, run_train_sft  # after the config checks

    run_dir = run_stage("train_sft", args, cfg, run_train_sft, READS)
    print(f"model: {run_dir / 'models' / 'sft'}")


if __name__ == "__main__":
    main()
