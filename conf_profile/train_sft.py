"""SFT distillation: sft/ -> models/sft/, on Ray Train workers running TRL's SFTTrainer under DeepSpeed.

The same code runs on CPU workers (gloo, fp32, DS_ACCELERATOR=cpu) and GPU workers (nccl, bf16). The
examples are in TRL's prompt-completion form, so the loss is on the assistant turn only, with the model's
own chat template. Checkpoints go to ``storage_path``; Ray Train restarts failed workers from the last one
(``max_failures``), and a re-run with the same run directory resumes from it (Ray Train V2 restores a run
of the same name and storage path). The exported folder is a plain transformers model (LoRA adapters are
merged), loadable by transformers and vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from conf_profile.core.settings import Config, TrainSftConfig
from conf_profile.core.training import deepspeed_config, global_batch

RUN_NAME = "train_sft"


def run_train_sft(cfg: Config, run_dir: Path) -> dict[str, Any]:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from conf_profile.models import resolve_model
    from conf_profile.raycluster import init_ray

    t = cfg.train_sft
    train_file, eval_file = run_dir / "sft" / "train.parquet", run_dir / "sft" / "eval.parquet"
    if not train_file.exists():
        raise FileNotFoundError(
            f"{train_file} does not exist; run the aggregate stage first (python -m jobs.aggregate)"
        )
    examples = pq.read_metadata(train_file).num_rows
    if examples == 0:
        raise ValueError(f"{train_file} has no examples (aggregate.sft_min_mean_level filtered them all?)")
    init_ray(cfg.ray)
    gpu = t.device == "gpu" or (t.device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    batch = global_batch(t.micro_batch_size, t.grad_accum, t.workers, t.global_batch_size)
    student = str(resolve_model(cfg.models.student, cfg.models.cache_dir))
    storage = t.storage_path or str((run_dir / "checkpoints").resolve())
    loop_config = {
        "settings": t.__dict__, "student": student, "train": str(train_file.resolve()), "gpu": gpu,
        "eval": str(eval_file.resolve()) if eval_file.exists() and pq.read_metadata(eval_file).num_rows else None,
        "deepspeed": deepspeed_config(t.zero_stage, t.micro_batch_size, t.grad_accum, t.workers, bf16=gpu,
                                      offload_optimizer=t.offload_optimizer, offload_params=t.offload_params),
    }  # fmt: skip
    _log(f"{examples} examples, {t.workers} {'GPU' if gpu else 'CPU'} workers, ZeRO-{t.zero_stage}, global batch "
         f"{batch}, student {student}, checkpoints in {storage}/{RUN_NAME}")  # fmt: skip
    started = time.monotonic()
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if gpu else {})}),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage, checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=t.max_failures)),
    )  # fmt: skip
    result = trainer.fit()
    out = run_dir / "models" / "sft"
    _export(result.checkpoint, out)
    metrics = {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float | str)}
    return {"model": str(out), "examples": examples, "workers": t.workers, "device": "gpu" if gpu else "cpu",
            "zero_stage": t.zero_stage, "global_batch": batch, "seconds": round(time.monotonic() - started, 1),
            **metrics}  # fmt: skip


def _export(checkpoint: Any, out: Path) -> None:
    """Copy the exported model out of the final checkpoint (temp folder, then rename)."""
    if checkpoint is None:
        raise RuntimeError("training finished without an exported model checkpoint")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    if not (tmp / "config.json").exists():
        raise RuntimeError(f"the final checkpoint holds no model folder (found {sorted(os.listdir(tmp))})")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)


def _train_loop(config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker."""
    t = TrainSftConfig(**config["settings"])
    if not config["gpu"]:
        os.environ["DS_ACCELERATOR"] = "cpu"  # before deepspeed is imported (DESIGN.md 3)
    import ray.train
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf_profile.core.training import prompt_completion

    if not config["gpu"] and t.zero_stage == 3:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")  # ZeRO-3 with several CPU workers (DESIGN.md 3)
    tokenizer = AutoTokenizer.from_pretrained(config["student"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.bfloat16 if config["gpu"] else torch.float32
    model = AutoModelForCausalLM.from_pretrained(config["student"], dtype=dtype)
    train = _dataset(Dataset, config["train"], prompt_completion)
    evals = _dataset(Dataset, config["eval"], prompt_completion) if config["eval"] else None
    trainer = _trainer(t, config, model, tokenizer, train, evals)
    if len(trainer.train_dataset) == 0:  # TRL drops examples whose target was cut off entirely
        raise ValueError(f"no SFT example fits train_sft.max_length={t.max_length} tokens with its target; raise it")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            resume = os.path.join(folder, "checkpoint")
            if not os.path.isdir(resume):  # the last report was the final export: training is complete
                resume = None
            _log(f"resuming from {resume}" if resume else "training already complete; exporting again")
            trainer.train(resume_from_checkpoint=resume)
    else:
        trainer.train()
    final = trainer.evaluate() if evals is not None else {}
    _report_export(trainer, final)


def _dataset(dataset_cls: Any, path: str, convert: Any) -> Any:
    table = pq.read_table(path, columns=["messages"])
    rows = [convert(m) for m in table.column("messages").to_pylist()]
    return dataset_cls.from_list(rows)


def _trainer(t: TrainSftConfig, config: dict[str, Any], model: Any, tokenizer: Any, train: Any, evals: Any) -> Any:
    from ray.train.huggingface.transformers import RayTrainReportCallback
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=tempfile.mkdtemp(prefix="sft-"),
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=1,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=1,
        eval_strategy="no",
        eval_on_start=evals is not None,  # the eval loss before training (DeepSpeed is set up by then)
        report_to="none",
        disable_tqdm=True,
        bf16=config["gpu"],
        fp16=False,
        use_cpu=not config["gpu"],
        ddp_backend=None if config["gpu"] else "gloo",
        deepspeed=config["deepspeed"],
        gradient_checkpointing=t.gradient_checkpointing,
        max_length=t.max_length,
        completion_only_loss=True,
        include_num_input_tokens_seen="all",
        seed=t.seed,
        dataloader_num_workers=0,
    )
    peft_config = None
    if t.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=t.lora_r, lora_alpha=t.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM"
        )
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evals, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=[RayTrainReportCallback(), _Progress()])  # fmt: skip


def _report_export(trainer: Any, final: dict[str, float]) -> None:
    """Every rank saves (ZeRO-3 gathers the shards); rank 0 reports the folder as the final checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    export = tempfile.mkdtemp(prefix="sft-export-")
    model = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: a plain model folder, as vLLM loads it
        model = model.merge_and_unload()
        trainer.model = model
    trainer.save_model(export)
    history = [h for h in trainer.state.log_history if "eval_loss" in h]
    metrics = {"global_step": trainer.state.global_step, "final": 1,
               "eval_loss_before": history[0]["eval_loss"] if history else None,
               "eval_loss_after": final.get("eval_loss"),
               "train_loss": next((h["train_loss"] for h in reversed(trainer.state.log_history) if "train_loss" in h),
                                  None),
               "tokens_seen": trainer.state.num_input_tokens_seen}  # fmt: skip
    metrics = {k: v for k, v in metrics.items() if v is not None}
    if ray.train.get_context().get_world_rank() == 0:
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(export))
    else:
        ray.train.report(metrics)


class _Progress:
    """One line per logged step on rank 0: step, loss, learning rate, tokens/s (the trainer's own
    progress bar is off, it garbles multi-worker logs)."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None

    def __getattr__(self, name: str) -> Any:  # the other TrainerCallback events: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        now, seen = time.monotonic(), int(state.num_input_tokens_seen or 0)
        rate = (seen - self.last[1]) / max(1e-9, now - self.last[0]) if self.last else 0.0
        self.last = (now, seen)
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in logs.items()}
        _log(f"step {state.global_step}/{state.max_steps} tokens/s {rate:,.0f} {json.dumps(shown)}")


def _log(message: str) -> None:
    print(f"train_sft: {message}", file=sys.stderr, flush=True)
