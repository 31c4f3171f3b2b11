"""SFT distillation: sft/ -> models/sft/, on Ray Train workers running TRL's SFTTrainer under DeepSpeed.

The same code runs on CPU workers (gloo, fp32 unless ``train_sft.dtype`` says bf16, DS_ACCELERATOR=cpu) and GPU
workers (nccl, bf16). The
examples are in TRL's prompt-completion form, so the loss is on the assistant turn only, with the model's
own chat template. Checkpoints, resume and export: conf_profile.raytrain. The exported folder is a plain
transformers model (LoRA adapters are merged), loadable by transformers and vLLM.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow.parquet as pq

from conf_profile import fs, raytrain
from conf_profile.core.settings import Config, TrainSftConfig
from conf_profile.core.training import global_batch
from conf_profile.fs import Loc
from conf_profile.storage import MODEL_SFT, SFT, check_reads

STAGE = "train_sft"


def run_train_sft(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    from conf_profile.models import resolve_model

    t = cfg.train_sft
    check_reads(STAGE, READS, run_dir)
    train_file, eval_file = SFT.path(run_dir) / "train.parquet", SFT.path(run_dir) / "eval.parquet"
    examples = fs.parquet_file(train_file).metadata.num_rows
    if examples == 0:
        raise ValueError(f"{train_file} has no examples (aggregate.sft_min_mean_level filtered them all?)")
    gpu, t = raytrain.placement(cfg, t)
    batch = global_batch(t.micro_batch_size, t.grad_accum, t.workers, t.global_batch_size)
    student = str(resolve_model(cfg.models.student, cfg.models.cache_dir))
    has_eval = eval_file.exists() and fs.parquet_file(eval_file).metadata.num_rows > 0
    loop_config = {"settings": t.__dict__, "student": student, "train": str(train_file.resolve()),
                   "eval": str(eval_file.resolve()) if has_eval else None}  # fmt: skip
    raytrain.log(STAGE, f"{examples} examples, global batch {batch}, student {student}")
    started = time.monotonic()
    out = run_dir / "models" / "sft"
    metrics = raytrain.fit(STAGE, _train_loop, loop_config, t, run_dir, gpu, out)
    return {"model": str(out), "examples": examples, "workers": t.workers, "device": "gpu" if gpu else "cpu",
            "dtype": raytrain.dtype(t, gpu), "zero_stage": t.zero_stage, "global_batch": batch,
            "seconds": round(time.monotonic() - started, 1), **metrics}  # fmt: skip


def _train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    t = TrainSftConfig(**config["settings"])
    raytrain.setup_worker(config, t.zero_stage)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf_profile.core.training import prompt_completion

    tokenizer = AutoTokenizer.from_pretrained(config["student"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config["bf16"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["student"], dtype=dtype)
    train = Dataset.from_list([prompt_completion(m) for m in _messages(config["train"])])
    evals = Dataset.from_list([prompt_completion(m) for m in _messages(config["eval"])]) if config["eval"] else None
    trainer = _trainer(t, config, model, tokenizer, train, evals)
    if len(trainer.train_dataset) == 0:  # TRL drops examples whose target was cut off entirely
        raise ValueError(f"no SFT example fits train_sft.max_length={t.max_length} tokens with its target; raise it")
    try:
        if not raytrain.train_or_resume(trainer, STAGE):
            return
        final = trainer.evaluate() if evals is not None else {}
        history = trainer.state.log_history
        before = [h["eval_loss"] for h in history if "eval_loss" in h]
        raytrain.report_export(trainer, {
            "eval_loss_before": before[0] if before else None, "eval_loss_after": final.get("eval_loss"),
            "train_loss": next((h["train_loss"] for h in reversed(history) if "train_loss" in h), None),
        })  # fmt: skip
    finally:
        raytrain.remove_scratch(trainer)


def _messages(path: str) -> list[list[dict[str, str]]]:
    return pq.read_table(path, columns=["messages"]).column("messages").to_pylist()


def _trainer(t: TrainSftConfig, config: dict[str, Any], model: Any, tokenizer: Any, train: Any, evals: Any) -> Any:
    from ray.train.huggingface.transformers import RayTrainReportCallback
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        **raytrain.trainer_args(t, config),
        per_device_eval_batch_size=t.micro_batch_size,
        lr_scheduler_type="cosine",
        eval_strategy="no",
        eval_on_start=evals is not None,  # the eval loss before training (DeepSpeed is set up by then)
        max_length=t.max_length,
        completion_only_loss=True,
        include_num_input_tokens_seen="all",
    )
    peft_config = None
    if t.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=t.lora_r, lora_alpha=t.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    callbacks = [RayTrainReportCallback(), raytrain.Progress(STAGE)]
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=callbacks)  # fmt: skip


READS = (SFT,)
WRITES = (MODEL_SFT,)
run = run_train_sft
