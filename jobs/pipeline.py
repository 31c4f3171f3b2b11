"""The main job: every stage in order in one Ray job, recorded in the run manifest.

    python -m jobs.pipeline [--from STAGE] [--to STAGE] [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

With no arguments this is the embedded default: the built-in synthetic data set (data.users users, with
truth), the demo model (SmolLM2-135M-Instruct) as teacher and student, everything on this machine's CPU;
the teacher labels label.max_users users with K = samples each.
A re-run with the same --run-dir skips the stages already done (an interrupted run resumes).
--from STAGE runs STAGE and the stages after it again, even when done (the earlier stages must have
completed in that run directory); --to STAGE stops after STAGE.
jobs/configs/quick.yaml is the quick profile on the tiny test model (what the end-to-end test runs).

Stages: builtin_data (the input: input.logs, or the synthetic logs), ingest (documents/ and rejects/),
embedded_models (prepare the models), label (teacher_samples/), aggregate (votes/, calibration.json,
sft/, rl/), train_sft (models/sft/), train_rl (models/rl/), infer (profiles/dt=DATE/ and
profile_attributes/dt=DATE/ for every user with a document, by the final student; DATE = infer.date or
today), evaluate (report/, when there is truth: input.truth or the built-in data's).
Every input user ends in profiles/ or in rejects/ (the summary states the counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conf_profile.cli import INTERRUPTED, fail, interrupted, job_parser, load_config
from conf_profile.core.ladder import markdown
from conf_profile.fs import location
from conf_profile.runner import STAGE_NAMES, StageOrderError, run_pipeline
from conf_profile.storage import open_run_dir


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.pipeline", __doc__)
    stages = ", ".join(STAGE_NAMES)
    parser.add_argument("--from", dest="first", metavar="STAGE", help=f"redo from this stage ({stages})")
    parser.add_argument("--to", dest="last", metavar="STAGE", help="stop after this stage")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    if args.first and args.run_dir is None:
        fail("--from needs --run-dir: the run whose earlier stages are done")
    for key, path in (("input.logs", cfg.input.logs), ("input.truth", cfg.input.truth)):
        if path and "://" not in path and not Path(path).exists():  # before any work (cloud URIs: at ingest)
            fail(f"configuration error: {key}={path} does not exist")
    run_dir = open_run_dir(args.run_dir, cfg.run.runs_root)
    try:
        results = run_pipeline(cfg, run_dir, first=args.first, last=args.last)
    except StageOrderError as exc:
        fail(str(exc))
    except (FileNotFoundError, ValueError) as exc:  # bad input found by a stage: recorded as failed
        fail(f"{exc} (the manifest in {run_dir} records the failed stage; fix and re-run with --run-dir)")
    except KeyboardInterrupt:  # recorded as failed in the manifest as well
        fail(interrupted(run_dir), INTERRUPTED)
    print(summary(results, run_dir))


def summary(results: dict[str, dict[str, Any]], run_dir: Path) -> str:
    lines = [f"\nrun directory:   {run_dir}"]
    if data := results.get("builtin_data"):
        builtin = f" (built-in: {data['users']:,} users, {data['bad_rows']:,} bad rows)" if data["builtin"] else ""
        lines.append(f"input logs:      {data['logs']}{builtin}")
    if ing := results.get("ingest"):
        lines.append(
            f"ingest:          {ing['rows_read']:,} rows -> {ing['users_out']:,} user documents; "
            f"{ing['rows_rejected']:,} rows and {ing['users_rejected']:,} users in {run_dir / 'rejects'}"
        )
    if lab := results.get("label"):
        for name, t in lab["teachers"].items():
            lines.append(f"label:           teacher {name}: {t['rows']:,} samples for {lab['users']:,} users, "
                         f"{t.get('valid_fraction', 0):.0%} schema-valid ({lab['device']})")  # fmt: skip
    if agg := results.get("aggregate"):
        lines.append(
            f"aggregate:       {agg['users_voted']:,} users voted, abstain share {agg['abstain_share']:.0%}; "
            f"SFT {agg['sft_train']:,} train / {agg['sft_eval']:,} eval, RL {agg['rl_users']:,} users"
        )
    if sft := results.get("train_sft"):
        loss = ""
        if "eval_loss_after" in sft and "eval_loss_before" in sft:
            loss = f"eval loss {sft['eval_loss_before']:.3f} -> {sft['eval_loss_after']:.3f}, "
        lines.append(f"train_sft:       {sft['global_step']} steps on {sft['examples']} examples, {loss}"
                     f"{sft['seconds']:.0f}s; model in {sft['model']}")  # fmt: skip
    if rl := results.get("train_rl"):
        if "skipped" in rl:
            lines.append(f"train_rl:        skipped: {rl['skipped']}")
        else:
            reward = (f"mean reward {rl.get('reward', 0):.3f} (format {rl.get('rewards_format_gate_mean', 0):.2f}, "
                      f"accuracy {rl.get('rewards_accuracy_mean', 0):.2f})")  # fmt: skip
            lines.append(f"train_rl:        {rl['global_step']} GRPO steps on {rl['users']} users, {reward}, "
                         f"{rl['seconds']:.0f}s; model in {rl['model']}")  # fmt: skip
    if inf := results.get("infer"):
        lines.append(f"infer:           {inf['users']:,} users profiled by {inf.get('student', inf['model'])} "
                     f"({inf['parse_errors']:,} unparsed, kept with the reason), {inf['seconds']:.0f}s; "
                     f"tables in {inf['profiles']}")  # fmt: skip
        if ing:
            rejected, total, left = ing["users_rejected"], ing["users_in"], inf.get("left_out", 0)
            counted = inf["users"] + rejected + left
            ok = "USERS MISSING" if counted != total else "every input user accounted for"
            if left and counted == total:
                ok = f"{left:,} users not profiled, as infer.max_users / infer.exclude_labeled ask"
            by_design = f" + {left:,} left out" if left else ""
            lines.append(f"conservation:    {inf['users']:,} profiled + {rejected:,} rejected{by_design} = "
                         f"{counted:,} of {total:,} input users ({ok})")  # fmt: skip
    if ev := results.get("evaluate"):
        if "stages" in ev:
            lines.append("evaluation:      stage               users  macro F1   ECE    injection adopted")
            for stage, m in ev["stages"].items():
                ece = "-" if m["ece"] is None else f"{m['ece']:.3f}"
                rate = m.get("injection_rate")
                injected = "" if "injection_rate" not in m else "-" if rate is None else f"{rate:.0%}"
                lines.append(f"                 {stage:18s}  {m['users']:5d}  {m['f1']:.3f}      {ece:5s}  {injected}")
            lad = ev.get("ladder")
            if lad and lad.get("stages"):
                lines.append(f"quality ladder:  every stage on the same {lad['users']} held-out users (macro F1, "
                             "abstention a miss; AURC; differences with paired-bootstrap 95% intervals)")  # fmt: skip
                lines.append(markdown(lad["stages"]))
            lines.append(f"report:          {location(ev['report']) / 'index.html'}")
        else:
            lines.append(f"evaluation:      {ev['skipped']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
