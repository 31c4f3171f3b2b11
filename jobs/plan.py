"""Size the labeling (or inference) job for a cluster: tensor parallel size, replicas, batch sizes, time.

    python -m jobs.plan --model qwen3-32b --gpu h100 --gpus 16 --users 2000000 [--samples 5]
                        [--prompt-tokens 1500] [--output-tokens 300] [--tokens-per-s N] [--section label|infer]
    python -m jobs.plan --model-config /models/teacher/config.json --params-b 32.8 --gpu h200 --gpus 8 --users 1e6

Prints the plan and the --set overrides to pass to jobs.label / jobs.pipeline. The arithmetic and its
assumptions are in conf_profile/core/plan.py; the time is an estimate from memory bandwidth and peak FLOPs at
50% efficiency: measure one node with `python -m jobs.bench label` and pass its decode tokens/s per replica
as --tokens-per-s to replace it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from conf_profile.core.plan import GPUS, MODELS, ModelShape, PlanError, plan


def _shape(args: argparse.Namespace) -> ModelShape:
    if args.model_config:
        cfg = json.loads(Path(args.model_config).read_text(encoding="utf-8"))
        if not args.params_b:
            sys.exit("jobs.plan: --model-config needs --params-b (the parameter count in billions)")
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
        name = Path(args.model_config).parent.name or "model"
        return ModelShape(
            name, args.params_b, cfg["num_hidden_layers"], cfg.get("num_key_value_heads", heads), head_dim
        )
    if args.model not in MODELS:
        sys.exit(f"jobs.plan: --model {args.model}: known models are {', '.join(MODELS)} (or give --model-config)")
    return MODELS[args.model]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.plan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--model", default="qwen3-32b", help=f"a known shape: {', '.join(MODELS)}")
    parser.add_argument("--model-config", metavar="FILE", help="a Hugging Face config.json instead of --model")
    parser.add_argument("--params-b", type=float, help="parameters in billions (with --model-config)")
    parser.add_argument("--gpu", default="h100", choices=sorted(GPUS))
    parser.add_argument("--gpus", type=int, required=True, help="GPUs available to the job")
    parser.add_argument("--users", type=float, required=True, help="users to label (1e6 is fine)")
    parser.add_argument("--samples", type=int, default=5, help="K samples per user (label.teachers[].samples)")
    parser.add_argument("--prompt-tokens", type=int, default=1500, help="mean prompt tokens (document + prefix)")
    parser.add_argument("--output-tokens", type=int, default=300, help="mean output tokens")
    parser.add_argument("--tokens-per-s", type=float, help="measured decode tokens/s per replica")
    parser.add_argument("--section", choices=("label", "infer"), default="label", help="config section to size")
    args = parser.parse_args(argv)
    try:
        p = plan(_shape(args), GPUS[args.gpu], args.gpus, int(args.users), args.samples, args.prompt_tokens,
                 args.output_tokens, tokens_per_s=args.tokens_per_s)  # fmt: skip
    except PlanError as exc:
        sys.exit(f"jobs.plan: {exc}")
    for key, value in p.to_dict().items():
        print(f"{key:34s} {value:,}" if isinstance(value, int) else f"{key:34s} {value}")
    print("\noverrides: " + " ".join(f"--set {o}" for o in p.config_overrides(args.section)))


if __name__ == "__main__":
    main()
