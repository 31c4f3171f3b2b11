"""GRPO on Ray Train with the real reward functions: the tiny model, first taught the output format by the
real SFT stage (so that rollouts parse and rewards have spread), then a few GRPO steps on 2 CPU workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.core.student import student_messages, student_target
from conf_profile.core.taxonomy import load_taxonomy

ONE_ATTRIBUTE = """name: one
attributes:
  - name: gender
    description: Gender.
    values:
      - {name: male, definition: "A man."}
      - {name: female, definition: "A woman."}
"""


def job(module: str, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    base = ("models.student=tiny", f"models.cache_dir={run_dir / 'cache'}", f"taxonomy.path={run_dir / 'tax.yaml'}",
            "ray.local_num_cpus=2")  # fmt: skip
    cmd = [sys.executable, "-m", module, "--run-dir", str(run_dir), *(f"--set={o}" for o in (*base, *overrides))]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.train
def test_grpo_steps_compute_rewards_change_weights_and_export(tmp_path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    (tmp_path / "tax.yaml").write_text(ONE_ATTRIBUTE)
    taxonomy = load_taxonomy(tmp_path / "tax.yaml")
    docs = {f"u{i}": f"profile (1 event):\n- bio: {'father' if i % 2 else 'mother'} of two" for i in range(8)}
    sft = []
    for uid, doc in docs.items():
        value = "male" if "father" in doc else "female"
        target = student_target("bio", {"gender": (value, 4, doc.split("bio: ")[1][:6])}, taxonomy)
        sft.append(
            {"user_id": uid, "messages": [*student_messages(taxonomy, doc), {"role": "assistant", "content": target}]}
        )
    (tmp_path / "sft").mkdir()
    pq.write_table(pa.Table.from_pylist(sft), tmp_path / "sft" / "train.parquet")
    taught = job("jobs.train_sft", tmp_path, "train_sft.max_steps=80", "train_sft.learning_rate=0.003",
                 "train_sft.grad_accum=1", "train_sft.save_steps=1000")  # fmt: skip
    assert taught.returncode == 0, taught.stderr[-4000:]

    rl = [{"user_id": uid, "prompt": student_messages(taxonomy, doc), "gender_vote": "male" if "father" in doc else
           "female", "gender_vote_share": 0.8} for uid, doc in docs.items()]  # fmt: skip
    (tmp_path / "rl").mkdir()
    pq.write_table(pa.Table.from_pylist(rl), tmp_path / "rl" / "train.parquet")
    # Rollouts at temperature 1.0: the distilled tiny model answers most users right, and at the default 0.7
    # its two rollouts agreed in every group of a run trained in bf16 (zero reward spread: nothing to learn);
    # at 1.0 a quarter to a half of the groups spread in both fp32 and bf16.
    rl_settings = ("train_rl.max_steps=2", "train_rl.max_completion_length=96", "train_rl.learning_rate=0.0005",
                   "train_rl.temperature=1.0")  # fmt: skip
    res = job("jobs.train_rl", tmp_path, *rl_settings)
    assert res.returncode == 0, res.stderr[-4000:]
    entry = json.loads((tmp_path / "manifest.json").read_text())["stages"]["train_rl"]
    assert entry["global_step"] == 2 and entry["workers"] == 2
    assert entry["dtype"] == "float32"  # train_rl.dtype's default on CPU
    for key in ("rewards_format_gate_mean", "rewards_accuracy_mean", "rewards_calibration_mean",
                "rewards_teacher_agreement_mean", "frac_reward_zero_std", "kl", "completions_mean_length"):  # fmt: skip
        assert key in entry, (key, entry)
    assert entry["rewards_format_gate_mean"] > 0, "no rollout parsed: the rewards had nothing to score"
    events = b"".join(f.read_bytes() for f in (tmp_path / "tensorboard" / "train_rl").glob("events.out.tfevents.*"))
    assert b"train/rewards/accuracy/mean" in events and b"train/kl" in events  # the rewards per step
    assert "train_rl: step 1/2" in res.stderr  # progress while it runs
    before = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "sft").state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "models" / "rl").state_dict()
    assert any(not torch.equal(p, before[n]) for n, p in after.items()), "no weight changed"


def test_missing_sft_model_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "tax.yaml").write_text(ONE_ATTRIBUTE)
    (tmp_path / "rl").mkdir()
    pq.write_table(pa.table({"user_id": ["u"]}), tmp_path / "rl" / "train.parquet")
    res = job("jobs.train_rl", tmp_path)
    assert (
        res.returncode == 2
        and "reads models/sft" in res.stderr
        and "run train_sft first (python -m jobs.train_sft" in res.stderr
    )


def test_constrained_rollouts_follow_the_student_schema(tmp_path) -> None:
    """The random tiny model writes no student output on its own; under the schema every sample parses."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf_profile.core.student import parse_student_output, student_schema
    from conf_profile.models import build_tiny_model
    from conf_profile.stages.train_rl import constrain_generation

    (tmp_path / "tax.yaml").write_text(ONE_ATTRIBUTE)
    taxonomy = load_taxonomy(tmp_path / "tax.yaml")
    model_dir = build_tiny_model(tmp_path / "tiny", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    messages = student_messages(taxonomy, "profile (1 event):\n- bio: father")
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    batch = {k: v.repeat(4, 1) for k, v in prompt.items()}

    def sample() -> list[str]:
        torch.manual_seed(0)
        out = model.generate(**batch, max_new_tokens=200, do_sample=True, temperature=1.0,
                             pad_token_id=tokenizer.eos_token_id)  # fmt: skip
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    assert all(parse_student_output(t, taxonomy).error is not None for t in sample())
    constrain_generation(model, tokenizer, student_schema(taxonomy))
    texts = sample()
    assert [parse_student_output(t, taxonomy).error for t in texts] == [None] * 4, texts
    assert sample() == texts  # a fresh grammar state per call: the second call is the same draw, not a stuck one
