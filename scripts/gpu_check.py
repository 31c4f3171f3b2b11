"""Two SFT steps and two GRPO steps of the tiny model through Ray Train on this machine's GPU (NCCL, bf16),
with what was measured printed at the end. For a single-GPU machine without network: it needs the
project's stack (torch, transformers, ray, trl, deepspeed, peft) but no model download and no vLLM (the
GRPO rollouts use vLLM when it is importable, else transformers).

    make gpu-check                                  # python scripts/gpu_check.py
    python scripts/gpu_check.py --device cpu        # the same on CPU workers (gloo, fp32): the CPU path

The training set is written here from a few one-line documents with known answers (a stand-in for the
aggregate stage's output, as the training tests use); the stages, Ray Train, DeepSpeed and TRL are real.
Exit status 0 when both stages trained and exported a model that loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ONE_ATTRIBUTE = """name: gpu-check
attributes:
  - name: gender
    description: Gender.
    values:
      - {name: male, definition: "A man."}
      - {name: female, definition: "A woman."}
"""


def _training_sets(run_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conf_profile.core.student import student_messages, student_target
    from conf_profile.core.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(run_dir / "tax.yaml")
    docs = {f"u{i}": f"profile (1 event):\n- bio: {'father' if i % 2 else 'mother'} of two" for i in range(8)}
    sft, rl = [], []
    for uid, doc in docs.items():
        value = "male" if "father" in doc else "female"
        target = student_target("bio", {"gender": (value, 4, doc.split("bio: ")[1][:6])}, taxonomy)
        sft.append({"user_id": uid, "messages": [*student_messages(taxonomy, doc),
                                                 {"role": "assistant", "content": target}]})  # fmt: skip
        rl.append({"user_id": uid, "prompt": student_messages(taxonomy, doc), "gender_vote": value,
                   "gender_vote_share": 0.8})  # fmt: skip
    for name, rows in (("sft", sft), ("rl", rl)):
        (run_dir / name).mkdir()
        pq.write_table(pa.Table.from_pylist(rows), run_dir / name / "train.parquet")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--run-dir", type=Path, help="where to write (default: a new temp folder)")
    args = parser.parse_args(argv)
    import importlib.util

    import torch

    if args.device == "gpu" and not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU visible to torch (run with --device cpu for the CPU path)", file=sys.stderr)
        return 2
    from conf_profile.core.config import build
    from conf_profile.core.settings import Config
    from conf_profile.stages.train_rl import run_train_rl
    from conf_profile.stages.train_sft import run_train_sft

    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "tax.yaml").write_text(ONE_ATTRIBUTE)
    _training_sets(run_dir)
    vllm = "on" if args.device == "gpu" and importlib.util.find_spec("vllm") else "off"
    cfg = build(Config, overrides=[
        "models.student=tiny", f"models.cache_dir={run_dir / 'cache'}", f"taxonomy.path={run_dir / 'tax.yaml'}",
        f"train_sft.device={args.device}", f"train_rl.device={args.device}", "train_sft.max_steps=2",
        "train_sft.grad_accum=1", "train_sft.max_length=1536", "train_rl.max_steps=2",
        "train_rl.max_completion_length=96", f"train_rl.use_vllm={vllm}",
        *(["ray.local_num_cpus=2"] if args.device == "cpu" else []),
    ])  # fmt: skip
    facts: dict[str, object] = {"device": args.device, "torch": torch.__version__, "rollouts": "vllm" if vllm ==
                                "on" else "transformers"}  # fmt: skip
    if args.device == "gpu":
        facts.update({"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                      "bf16_supported": torch.cuda.is_bf16_supported(), "nccl": torch.cuda.nccl.version()})  # fmt: skip
    else:
        from conf_profile.core.hardware import cpu_flags

        facts["cpu_flags"] = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))
    for stage, run in (("train_sft", run_train_sft), ("train_rl", run_train_rl)):
        started = time.monotonic()
        entry = run(cfg, run_dir)
        seconds = time.monotonic() - started
        keep = ("global_step", "workers", "device", "tokens_seen", "train_loss", "reward", "kl")
        facts[stage] = {"seconds": round(seconds, 1), **{k: entry[k] for k in keep if k in entry}}
        if entry.get("global_step") != 2:
            print(f"gpu-check: {stage} ran {entry.get('global_step')} steps, not 2: {entry}", file=sys.stderr)
            return 1
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "models" / "rl")
    facts["exported_parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(facts, indent=2, default=str))
    print(f"gpu-check: ok ({run_dir})")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
