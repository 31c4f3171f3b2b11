"""SFT on Ray Train + DeepSpeed + TRL with the tiny model on CPU workers (real Ray, real training)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import kill_session

from conf_profile.core.student import student_messages, student_target
from conf_profile.core.taxonomy import load_taxonomy

TAXONOMY = load_taxonomy()


def write_sft_set(run_dir: Path, n: int = 8) -> None:
    """A small SFT set in the aggregate stage's format (a stand-in for its output)."""
    rows = []
    for i in range(n):
        document = f"profile (1 event):\n- bio: nurse and mother of {i % 3 + 1}\nsearch (1 event):\n- strollers"
        judgements = {"gender": ("female", 4, "mother"), "occupation": ("healthcare_worker", 5, "nurse")}
        target = student_target("bio says nurse", judgements, TAXONOMY)
        messages = [*student_messages(TAXONOMY, document), {"role": "assistant", "content": target}]
        rows.append({"user_id": f"u{i}", "split": "train" if i < n - 2 else "eval", "messages": messages})
    table = pa.Table.from_pylist(rows)
    (run_dir / "sft").mkdir(parents=True)
    for split in ("train", "eval"):
        pq.write_table(
            table.filter(pa.compute.equal(table.column("split"), split)), run_dir / "sft" / f"{split}.parquet"
        )


def sft_job(run_dir: Path, cache: Path, *overrides: str) -> list[str]:
    base = ("models.student=tiny", f"models.cache_dir={cache}", "train_sft.max_length=1536", "train_sft.grad_accum=1",
            "ray.local_num_cpus=2")  # fmt: skip
    return [
        sys.executable,
        "-m",
        "jobs.train_sft",
        "--run-dir",
        str(run_dir),
        *(f"--set={o}" for o in (*base, *overrides)),
    ]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.train
@pytest.mark.parametrize("stage,lora,dtype", [(3, False, "float32"), (2, True, "bfloat16")],
                         ids=["zero3-fp32", "zero2-lora-bf16"])  # fmt: skip
def test_two_cpu_workers_train_and_export_a_loadable_model(tmp_path, stage, lora, dtype) -> None:
    """ZeRO-3 in fp32 and ZeRO-2 with LoRA in bf16 (train_sft.dtype; fp32 is the CPU default); plain ZeRO-2
    (the default) gets the same checks at the end of the fault test below, whose resumed run is a whole
    ZeRO-2 training in the default dtype."""
    write_sft_set(tmp_path)
    cache = tmp_path / "cache"
    settings = (f"train_sft.zero_stage={stage}", f"train_sft.lora={str(lora).lower()}", "train_sft.max_steps=3",
                "train_sft.save_steps=2", f"train_sft.dtype={dtype}",
                *(["train_sft.learning_rate=0.01"] if lora else []))  # fmt: skip
    scratch = _scratch()
    res = subprocess.run(sft_job(tmp_path, cache, *settings), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "train_sft: step 1/3" in res.stderr
    _assert_trained_and_exported(res.stderr, tmp_path, cache, scratch, steps=3, stage=stage, dtype=dtype)


def _scratch() -> set[Path]:
    """The training workers' scratch folders in the temp folder now."""
    return set(Path(tempfile.gettempdir()).glob("train_sft-*")) | set(Path(tempfile.gettempdir()).glob("export-*"))


def _assert_trained_and_exported(log: str, run_dir: Path, cache: Path, scratch: set[Path], steps: int,
                                 stage: int, dtype: str) -> None:  # fmt: skip
    """The run left no scratch folder beyond ``scratch``, recorded its steps, workers, ZeRO stage, dtype and
    both eval losses, showed progress, wrote TensorBoard scalars, and exported a plain model whose weights
    changed and which loads and generates."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conf_profile.models import tiny_model_dir

    left = _scratch()
    assert left <= scratch, f"the workers left their scratch folders: {sorted(left - scratch)}"
    entry = json.loads((run_dir / "manifest.json").read_text())["stages"]["train_sft"]
    assert entry["global_step"] == steps and entry["workers"] == 2 and entry["zero_stage"] == stage
    precision = {"bfloat16": "bf16", "float32": "fp32"}[dtype]
    assert entry["dtype"] == dtype and f"ZeRO-{stage}, {precision}," in log
    assert 0 < entry["eval_loss_after"] < float("inf") and 0 < entry["eval_loss_before"] < float("inf")
    assert f"train_sft: step {steps}/{steps}" in log and "tokens/s" in log  # progress while it runs
    # TensorBoard by default: event files (a writer for the eval before training, one for the steps) with the
    # logged scalars
    events = b"".join(f.read_bytes() for f in (run_dir / "tensorboard" / "train_sft").glob("events.out.tfevents.*"))
    assert b"train/loss" in events and b"train/learning_rate" in events and b"eval/loss" in events
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir(cache))
    after = AutoModelForCausalLM.from_pretrained(run_dir / "models" / "sft")
    assert set(after.state_dict()) == set(before.state_dict())  # a plain model (LoRA merged), same tensors
    changed = [n for n, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[n])]
    assert changed, "no weight changed"
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "models" / "sft")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)  # fmt: skip
    out = after.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.train
@pytest.mark.fault
def test_a_killed_worker_restarts_in_the_job_and_a_killed_driver_resumes_from_the_last_checkpoint(tmp_path) -> None:
    """Two faults in one run. First one Ray Train worker process dies (SIGKILL, as an OOM kill would): Ray
    Train's failure policy (train_sft.max_failures) restarts the worker group from the run's last checkpoint,
    in the same job. Once the restarted group has saved a checkpoint of its own, the driver dies with the
    local Ray it started (a lost machine): the same command again resumes from that checkpoint and ends at
    step 120, with the checks every training run gets (ZeRO-2, the default, without LoRA)."""
    write_sft_set(tmp_path, n=12)
    cache = tmp_path / "cache"
    # enough steps that both kills land mid-run (the tiny model takes ~0.3 s a step)
    cmd = sft_job(tmp_path, cache, "train_sft.max_steps=120", "train_sft.save_steps=5", "train_sft.max_failures=1")
    log_path = tmp_path / "first.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed below)
    job = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert _wait_for_a_checkpoint(job, tmp_path), log_path.read_text()[-3000:]
        # this job's workers (its session's), not those of another Ray on the machine
        ps = ["pgrep", "-s", str(job.pid), "-f", "ray::RayTrainWorker"]
        workers = subprocess.run(ps, capture_output=True, text=True)
        pids = [int(p) for p in workers.stdout.split()]
        assert pids, "no Ray Train worker process found"
        os.kill(pids[-1], signal.SIGKILL)  # one worker of the group
        before = _checkpoints(tmp_path)  # after the kill: the first group's last checkpoint is among these
        # the restarted group resumes and saves a checkpoint the first group did not write
        assert _wait_for_a_checkpoint(job, tmp_path, besides=before, log=log_path), log_path.read_text()[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and the local Ray it started
        job.wait()
        kill_session(job.pid)  # and its workers, which have process groups of their own
        log.close()
    text = log_path.read_text()
    assert "resuming from" in text, text[-3000:]
    restarted = _steps(text.split("resuming from", 1)[1])
    assert restarted and min(restarted) > 1, restarted  # the restarted group continued, it did not start over
    assert "step 120/120" not in text
    scratch = _scratch()  # the killed processes' scratch folders stay; the resumed run must leave none
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resuming from" in second.stderr
    _assert_continued_to_step_120(second.stderr, tmp_path)
    _assert_trained_and_exported(second.stderr, tmp_path, cache, scratch, steps=120, stage=2, dtype="float32")


def _checkpoints(run_dir: Path) -> set[str]:
    """The run's checkpoints that Ray Train has written whole (a checkpoint_* folder with its checkpoint/)."""
    storage = run_dir / "checkpoints" / "train_sft"
    return {d.name for d in storage.glob("checkpoint_*") if (d / "checkpoint").is_dir()}


def _wait_for_a_checkpoint(
    job: subprocess.Popen, run_dir: Path, besides: set[str] = frozenset(), log: Path | None = None
) -> bool:
    """Wait (up to 10 minutes) until the SFT run has saved a checkpoint not in ``besides`` (with ``log``:
    after the log says it resumed) and Ray Train has recorded it; whether the job is still running then (the
    kill lands mid-run)."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and job.poll() is None:
        resumed = log is None or "resuming from" in log.read_text()
        if resumed and _checkpoints(run_dir) - besides:
            time.sleep(3)  # let Ray Train record the checkpoint
            return job.poll() is None
        time.sleep(1)
    return False


def _steps(log: str) -> list[int]:
    return [int(line.split("step ")[1].split("/")[0]) for line in log.splitlines() if "train_sft: step " in line]


def _assert_continued_to_step_120(log: str, run_dir: Path) -> None:
    """Every step in ``log`` continues after the checkpoint (none restarts from step 1) and the run ends at
    step 120, as its manifest says."""
    steps = _steps(log)
    assert steps and min(steps) > 1 and max(steps) == 120, steps
    assert json.loads((run_dir / "manifest.json").read_text())["stages"]["train_sft"]["global_step"] == 120


def test_bad_batch_arithmetic_fails_before_any_work(tmp_path) -> None:
    # With an explicit worker count the config itself is refused; with workers auto (0) the same check runs
    # once the count is resolved, before training (tests/test_hardware.py, the placement test).
    res = subprocess.run(sft_job(tmp_path, tmp_path, "train_sft.global_batch_size=6", "train_sft.grad_accum=2",
                                 "train_sft.workers=2"), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 2 and "global_batch_size=6" in res.stderr


def test_missing_sft_set_is_a_clear_error(tmp_path) -> None:
    res = subprocess.run(sft_job(tmp_path, tmp_path), capture_output=True, text=True, timeout=120)
    assert (
        res.returncode == 2
        and "reads sft" in res.stderr
        and "run aggregate first (python -m jobs.aggregate" in res.stderr
    )


def test_a_run_snapshot_cut_short_by_a_killed_driver_is_put_back_from_its_last_whole_copy(tmp_path) -> None:
    """Ray Train rewrites checkpoint_manager_snapshot.json in place; a driver killed mid-write leaves it
    empty or cut, and the run cannot resume. The keeper copies each whole version aside while training
    runs; repair_snapshot puts the last one back (or, with none, moves the cut file aside)."""
    from conf_profile.raytrain import SNAPSHOT, SnapshotKeeper, repair_snapshot

    run = tmp_path / "checkpoints" / "train_sft"
    run.mkdir(parents=True)
    snapshot = run / SNAPSHOT
    repair_snapshot(str(tmp_path / "checkpoints"), "train_sft", "train_sft")  # no snapshot yet: nothing to do
    assert not snapshot.exists()
    with SnapshotKeeper(str(tmp_path / "checkpoints"), "train_sft", interval=0.05):
        snapshot.write_text('{"checkpoints": ["checkpoint_1"]}')
        time.sleep(0.5)
        snapshot.write_text('{"checkpoints": ["checkpoint_1", "chec')  # cut: never copied aside
        time.sleep(0.5)
    whole = run / f".{SNAPSHOT}.whole"
    assert whole.read_text() == '{"checkpoints": ["checkpoint_1"]}'
    repair_snapshot(str(tmp_path / "checkpoints"), "train_sft", "train_sft")
    assert snapshot.read_text() == '{"checkpoints": ["checkpoint_1"]}'
    repair_snapshot(str(tmp_path / "checkpoints"), "train_sft", "train_sft")  # whole: left as it is
    assert snapshot.read_text() == '{"checkpoints": ["checkpoint_1"]}'
    whole.unlink()
    snapshot.write_text("")  # cut at its first byte, and no whole copy
    repair_snapshot(str(tmp_path / "checkpoints"), "train_sft", "train_sft")
    assert not snapshot.exists() and (run / f"{SNAPSHOT}.cut").exists()
