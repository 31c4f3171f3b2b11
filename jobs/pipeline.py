"""The main job: every stage in order in one Ray job, recorded in the run manifest.

    python -m jobs.pipeline [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

With no arguments this is the embedded default: the built-in synthetic data set (data.users users, with
truth), the demo model (SmolLM2-135M-Instruct) as teacher and student, everything on this machine's CPU.
A re-run with the same --run-dir skips the stages already done.

Stages so far: builtin_data (the input: input.logs, or the synthetic logs), ingest (documents/ and
rejects/), embedded_models (prepare the models, check the teacher answers on vLLM). label, aggregate,
train_sft, train_rl, infer and evaluate join as they are built.
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_config
from conf_profile.pipeline.runner import run_pipeline
from conf_profile.runs import open_run_dir


def main(argv: list[str] | None = None) -> None:
    args = job_parser("python -m jobs.pipeline", __doc__).parse_args(argv)
    cfg = load_config(args)
    run_dir = open_run_dir(args.run_dir, cfg.run.runs_root)
    results = run_pipeline(cfg, run_dir)
    data, ing, model = results["builtin_data"], results["ingest"], results["embedded_models"]
    print(f"\nrun directory:   {run_dir}")
    if data["builtin"]:
        print(f"input logs:      {data['logs']} (built-in: {data['users']:,} users, {data['bad_rows']:,} bad rows)")
    else:
        print(f"input logs:      {data['logs']}")
    print(
        f"ingest:          {ing['rows_read']:,} rows -> {ing['users_out']:,} user documents in "
        f"{run_dir / 'documents'}; {ing['rows_rejected']:,} rows and {ing['users_rejected']:,} users in "
        f"{run_dir / 'rejects'}"
    )
    print(f"teacher model:   {model['teacher']}")
    print(f"vLLM check:      {model['vllm_check_prompt']}\n  -> {model['vllm_check_answer']}")
    print(f"next:            python -m jobs.label --run-dir {run_dir}  (teacher labeling; not yet in the pipeline)")
    print("not built yet:   aggregate, train_sft, train_rl, infer, evaluate")


if __name__ == "__main__":
    main()
