"""What the training stages share on Ray Train: the TorchTrainer around a per-worker loop, DeepSpeed set-up
in the worker, resume from the last checkpoint, progress lines, and the export of the final model.

Checkpoints go to ``storage_path/<stage>``; Ray Train restarts failed workers from the last one
(``max_failures``), and a re-run with the same run directory resumes from it (Ray Train V2 restores a run
of the same name and storage path). The final report carries the exported model folder (every rank saves,
so ZeRO-3 shards are gathered); the driver copies it to ``models/<name>/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conf_profile import fs
from conf_profile.core.hardware import TRAINER_RESOURCE, pinned_resources, train_dtype, train_workers
from conf_profile.core.settings import Config, TrainerSettings
from conf_profile.core.training import deepspeed_config
from conf_profile.fs import Loc, is_uri, location
from conf_profile.storage import checkpoint_folder, checkpoint_location

T = typing.TypeVar("T", bound=TrainerSettings)


def placement(cfg: Config, settings: T) -> tuple[bool, T]:
    """(GPU or not; the settings with the worker count and the per-worker custom resources resolved for
    this cluster: core.hardware.train_workers and pinned_resources)."""
    import ray

    from conf_profile.raycluster import init_ray

    init_ray(cfg.ray, dashboard=True)  # Ray Train polls the state API the dashboard serves
    cluster = ray.cluster_resources()
    gpu = settings.device == "gpu" or (settings.device == "auto" and cluster.get("GPU", 0) > 0)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    resolved = dataclasses.replace(
        settings, workers=train_workers(settings.workers, gpu, nodes),
        resources=pinned_resources(settings.resources, cluster, TRAINER_RESOURCE),
    )  # fmt: skip
    resolved.validate()  # e.g. global_batch_size against the resolved worker count
    return gpu, resolved


def dtype(settings: TrainerSettings, gpu: bool) -> str:
    """The dtype the workers train in (``settings.dtype``; auto: bf16 on GPU, fp32 on CPU)."""
    return train_dtype(settings.dtype, gpu)


def fit(
    stage: str, loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any], settings: TrainerSettings,
    run_dir: Loc, gpu: bool, out: Loc,
) -> dict[str, Any]:  # fmt: skip
    """Train with ``settings.workers`` workers running ``loop``; copy the exported model to ``out``;
    return the final report's metrics."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = settings
    bf16 = dtype(t, gpu) == "bfloat16"
    storage, name = checkpoint_location(t.storage_path, run_dir, stage)
    if t.report_to == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise ValueError(f"{stage}.report_to=mlflow needs the mlflow package on every node (pip install mlflow), "
                         "or report_to: tensorboard")  # fmt: skip
    loop_config = {
        **loop_config, "gpu": gpu, "bf16": bf16, "stage": stage, "run_id": run_dir.name,
        "tensorboard_dir": str(tensorboard_dir(run_dir, stage)),
        "deepspeed": deepspeed_config(t.zero_stage, t.micro_batch_size, t.grad_accum, t.workers, bf16=bf16,
                                      offload_optimizer=t.offload_optimizer, offload_params=t.offload_params),
    }  # fmt: skip
    pinned = f" on nodes with {', '.join(t.resources)}" if t.resources else ""
    kind = "GPU" if gpu else "CPU"
    precision = "bf16" if bf16 else "fp32"
    log(stage, f"{t.workers} {kind} workers{pinned}, ZeRO-{t.zero_stage}, {precision}, checkpoints in {storage}/{name}")
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=t.workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if gpu else {}),
                                                           **t.resources}),
        run_config=RunConfig(name=name, storage_path=storage, checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=t.max_failures)),
    )  # fmt: skip
    repair_snapshot(storage, name, stage)
    with SnapshotKeeper(storage, name):
        result = trainer.fit()
    export(result.checkpoint, out)
    return {k: v for k, v in (result.metrics or {}).items() if isinstance(v, int | float | str)}


# Ray Train V2 records a run's checkpoints in this file and rewrites it in place after each checkpoint: a
# driver killed during that write leaves it cut short, and the same command then cannot resume ("Expecting
# value", "delete the existing folder"). The keeper copies each whole version aside while training runs;
# repair_snapshot puts the last one back before the next start.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def _snapshot_files(storage: str, name: str) -> tuple[Any, str, str]:
    """(file system, the snapshot's path, its last whole copy's path) of the run ``name`` in ``storage``."""
    filesystem, base = checkpoint_folder(storage, name)
    return filesystem, f"{base}/{SNAPSHOT}", f"{base}/.{SNAPSHOT}.whole"


def _whole_json(filesystem: Any, path: str) -> bytes | None:
    """The file's bytes if it exists and holds a whole JSON document, else None."""
    import json

    try:
        with filesystem.open_input_stream(path) as f:
            data = f.read()
        json.loads(data)
        return data
    except (OSError, ValueError):
        return None


def repair_snapshot(storage: str, name: str, stage: str) -> None:
    """Before a (re)start: a run snapshot cut short by a killed driver is replaced by its last whole copy;
    without one it is moved aside, and the stage trains again from its first step."""
    import pyarrow.fs as pafs

    filesystem, snapshot, whole = _snapshot_files(storage, name)
    if filesystem.get_file_info(snapshot).type == pafs.FileType.NotFound or _whole_json(filesystem, snapshot):
        return
    copy = _whole_json(filesystem, whole)
    if copy is not None:
        with filesystem.open_output_stream(snapshot) as f:
            f.write(copy)
        log(stage, "Ray Train's run snapshot was cut short (a driver killed while writing it): its last whole "
                   "copy is back in place")  # fmt: skip
    else:
        filesystem.move(snapshot, f"{snapshot}.cut")
        log(stage, f"Ray Train's run snapshot was cut short and has no whole copy: moved to {snapshot}.cut; "
                   "the stage trains again from its first step")  # fmt: skip


class SnapshotKeeper:
    """While training runs, a thread copies each whole version of the run snapshot aside (``.<name>.whole``,
    written beside it and moved in), every ``interval`` seconds."""

    def __init__(self, storage: str, name: str, interval: float = 0.5) -> None:
        import threading

        self.files = _snapshot_files(storage, name)
        self.interval, self.stop = interval, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        filesystem, snapshot, whole = self.files
        last = _whole_json(filesystem, whole)
        while not self.stop.wait(self.interval):
            data = _whole_json(filesystem, snapshot)
            if data is None or data == last:
                continue
            try:
                with filesystem.open_output_stream(f"{whole}.tmp") as f:
                    f.write(data)
                filesystem.move(f"{whole}.tmp", whole)
                last = data
            except OSError:  # the run folder went away meanwhile: the next round tries again
                continue

    def __enter__(self) -> SnapshotKeeper:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def tensorboard_dir(run_dir: Loc, stage: str) -> Loc:
    return run_dir.resolve() / "tensorboard" / stage


def export(checkpoint: Any, out: Loc) -> None:
    """Copy the exported model out of the final checkpoint (temp folder, then rename; to an object store:
    uploaded, and the stage's manifest entry commits it)."""
    if checkpoint is None:
        raise RuntimeError("training finished without an exported model checkpoint")
    local = out if isinstance(out, Path) else Path(tempfile.mkdtemp(prefix="export-")) / out.name
    tmp = local.with_name(f".{local.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    if not (tmp / "config.json").exists():
        raise RuntimeError(f"the final checkpoint holds no model folder (found {sorted(os.listdir(tmp))})")
    if isinstance(out, Path):
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    try:
        fs.remove(out)
        fs.upload_tree(tmp, out)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def setup_worker(config: dict[str, Any], zero_stage: int) -> None:
    """In a worker, before anything imports DeepSpeed (docs/architecture.md 3). TensorBoard writes to a local
    folder: the run directory's own, or, when that is on an object store, one under this node's temp folder
    that rank 0 uploads at the end (upload_tensorboard)."""
    board = config["tensorboard_dir"]
    if is_uri(board):
        board = os.path.join(tempfile.gettempdir(), "conf-profile-tensorboard", config["run_id"], config["stage"])
        os.environ["CONF_PROFILE_TENSORBOARD_UPLOAD"] = config["tensorboard_dir"]
    os.environ["TENSORBOARD_LOGGING_DIR"] = board  # read by transformers' TensorBoard callback
    if not config["gpu"]:
        os.environ["DS_ACCELERATOR"] = "cpu"
        if zero_stage == 3:
            import deepspeed

            deepspeed.init_distributed(dist_backend="gloo")  # ZeRO-3 with several CPU workers


def trainer_args(settings: TrainerSettings, config: dict[str, Any]) -> dict[str, Any]:
    """The HF TrainingArguments both stages share: batch, schedule, checkpoints, device, DeepSpeed, logging."""
    t = settings
    return {
        "output_dir": tempfile.mkdtemp(prefix=f"{config['stage']}-"),
        "per_device_train_batch_size": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "learning_rate": t.learning_rate,
        "num_train_epochs": t.epochs,
        "max_steps": t.max_steps or -1,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": t.save_steps,
        "save_total_limit": 1,
        "report_to": t.report_to,
        "disable_tqdm": True,  # Progress prints one line per step instead
        "bf16": config["bf16"],
        "fp16": False,
        "use_cpu": not config["gpu"],
        "ddp_backend": None if config["gpu"] else "gloo",
        "deepspeed": config["deepspeed"],
        "gradient_checkpointing": t.gradient_checkpointing,
        "seed": t.seed,
        "dataloader_num_workers": 0,
    }


def train_or_resume(trainer: Any, stage: str) -> bool:
    """trainer.train(), from the last checkpoint of this run when Ray Train restored one. Returns False,
    training nothing, when the restored checkpoint is the final export of a finished run: it is reported
    again as the result."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        trainer.train()
        return True
    with checkpoint.as_directory() as folder:
        resume = os.path.join(folder, "checkpoint")  # where RayTrainReportCallback puts the HF checkpoint
        if os.path.isdir(resume):
            log(stage, f"resuming from {resume}")
            trainer.train(resume_from_checkpoint=resume)
            return True
    log(stage, "this run had finished: its exported model is the result, nothing to train")
    metrics = {"final": 1, "restored_finished_run": 1}
    if ray.train.get_context().get_world_rank() == 0:
        ray.train.report(metrics, checkpoint=checkpoint)
    else:
        ray.train.report(metrics)
    return False


def report_export(trainer: Any, metrics: dict[str, Any]) -> None:
    """Every rank saves (ZeRO-3 gathers the shards); rank 0 reports the folder as the final checkpoint."""
    import ray.train
    from ray.train import Checkpoint

    folder = tempfile.mkdtemp(prefix="export-")
    upload_tensorboard()
    if hasattr(trainer.model, "merge_and_unload"):  # LoRA: a plain model folder, as vLLM loads it
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(folder)
    metrics = {"global_step": trainer.state.global_step, "final": 1, "tokens_seen": trainer.state.num_input_tokens_seen,
               **{k: v for k, v in metrics.items() if v is not None}}  # fmt: skip
    try:
        if ray.train.get_context().get_world_rank() == 0:
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))  # copied to storage here
        else:
            ray.train.report(metrics)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def upload_tensorboard() -> None:
    """Rank 0 copies its local TensorBoard folder to the run directory on an object store (setup_worker)."""
    import ray.train

    target = os.environ.get("CONF_PROFILE_TENSORBOARD_UPLOAD")
    local = Path(os.environ.get("TENSORBOARD_LOGGING_DIR", ""))
    if target and local.is_dir() and ray.train.get_context().get_world_rank() == 0:
        fs.upload_tree(local, location(target))
        shutil.rmtree(local, ignore_errors=True)


def remove_scratch(trainer: Any) -> None:
    """The worker's local HF output folder (intermediate checkpoints, ~2 GB for the demo model): Ray Train
    has copied what it keeps to storage_path; without this every run leaves it in the temp folder."""
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)


def step_means(history: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    """Mean over the logged training steps of each key present (for the manifest)."""
    out = {}
    for key in keys:
        values = [h[key] for h in history if isinstance(h.get(key), int | float)]
        if values:
            out[key.replace("/", "_")] = round(sum(values) / len(values), 4)
    return out


class Progress:
    """A transformers TrainerCallback printing one line per logged step on rank 0: step, tokens/s and the
    logged values (loss, learning rate, rewards...). The trainer's own progress bar is off: it garbles
    multi-worker logs."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.last: tuple[float, int] | None = None

    def __getattr__(self, name: str) -> Any:  # the other TrainerCallback events: nothing to do
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        import json

        if not state.is_world_process_zero or not logs:
            return
        now, seen = time.monotonic(), int(state.num_input_tokens_seen or 0)
        rate = (seen - self.last[1]) / max(1e-9, now - self.last[0]) if self.last else 0.0
        self.last = (now, seen)
        shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items()}
        log(self.stage, f"step {state.global_step}/{state.max_steps} tokens/s {rate:,.0f} {json.dumps(shown)}")


def log(stage: str, message: str) -> None:
    print(f"{stage}: {message}", file=sys.stderr, flush=True)
