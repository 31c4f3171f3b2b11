"""Run the stages in order, recording each in the run manifest; completed stages are skipped on a re-run.

``first``/``last`` (``jobs.pipeline --from/--to``) pick a range of stages. The stages before ``first`` must
have completed in this run directory; ``first`` and the stages after it run again even when done (their
manifest entries, and a training stage's checkpoints, are dropped first so nothing stale is resumed).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conf_profile.core.config import to_dict
from conf_profile.core.labeling import prompt_version
from conf_profile.core.settings import Config
from conf_profile.core.student import student_prompt_version
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.raycluster import init_ray
from conf_profile.stages import (
    aggregate,
    builtin_data,
    embedded_models,
    evaluate,
    infer,
    ingest,
    label,
    train_rl,
    train_sft,
)
from conf_profile.storage import (
    RunTable,
    check_reads,
    checkpoint_folder,
    checkpoint_location,
    drop_derived,
    drop_stages,
    read_manifest,
    record_run_info,
    record_stage,
)

Stage = Callable[[Config, Path], dict[str, Any]]
# Data-flow order. Each module has run(cfg, run_dir) and declares the run tables it READS and WRITES.
MODULES = (builtin_data, ingest, embedded_models, label, aggregate, train_sft, train_rl, infer, evaluate)
STAGES: tuple[tuple[str, Stage], ...] = tuple((m.__name__.rsplit(".", 1)[1], m.run) for m in MODULES)
STAGE_NAMES = tuple(name for name, _ in STAGES)
TRAINING = {"train_sft", "train_rl"}  # the stages that run Ray Train
READS = {name: m.READS for name, m in zip(STAGE_NAMES, MODULES, strict=True)}


def run_checked(name: str, reads: Sequence[RunTable], stage: Stage, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Run one stage after checking that the tables it reads are in the run directory (a MissingInputError
    names the job that writes a missing one)."""
    check_reads(name, reads, run_dir)
    return stage(cfg, run_dir)


class StageOrderError(ValueError):
    """--from/--to name an unknown stage, an empty range, or a range whose earlier stages have not run."""


def select(names: tuple[str, ...], done: set[str], first: str | None, last: str | None) -> tuple[int, int]:
    """Indexes [start, stop] of the stages to consider; raises StageOrderError naming the fix.

    >>> select(("a", "b", "c"), {"a"}, "b", None)
    (1, 2)
    """
    for flag, name in (("--from", first), ("--to", last)):
        if name is not None and name not in names:
            raise StageOrderError(f"{flag} {name}: no such stage; stages are {', '.join(names)}")
    start = names.index(first) if first else 0
    stop = names.index(last) if last else len(names) - 1
    if start > stop:
        raise StageOrderError(f"--from {first} comes after --to {last}; stages run in the order {', '.join(names)}")
    missing = [n for n in names[:start] if n not in done]
    if missing:
        raise StageOrderError(
            f"--from {first}: the earlier stages {', '.join(missing)} have not completed in this run directory; "
            f"run them first (e.g. --to {missing[-1]}) or give the run directory that has them"
        )
    return start, stop


def run_pipeline(
    cfg: Config,
    run_dir: Path,
    stages: tuple[tuple[str, Stage], ...] = STAGES,
    first: str | None = None,
    last: str | None = None,
) -> dict[str, Any]:
    names = tuple(name for name, _ in stages)
    manifest = read_manifest(run_dir).get("stages", {})
    done = {name for name, entry in manifest.items() if entry.get("status") == "ok"}
    start, stop = select(names, done, first, last)
    if first is not None:  # redo from here: what follows is stale
        drop_stages(run_dir, names[start:])
        stale = drop_derived(run_dir, names)
        if stale:
            print(f"pipeline: removed the stale outputs of {', '.join(stale)} (computed from the stages being redone;"
                  " run those jobs again)", file=sys.stderr, flush=True)  # fmt: skip
        for name in names[start:]:  # a later plain re-run must not restore a stale finished run either
            _clear_checkpoints(cfg, run_dir, name)
        done -= set(names[start:])
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    record_run_info(run_dir, {"taxonomy_version": taxonomy.version, "teacher_prompt_version": prompt_version(taxonomy),
                              "student_prompt_version": student_prompt_version(taxonomy)})  # fmt: skip
    results: dict[str, Any] = {name: manifest[name] for name in names[:start] if name in done}
    if (set(names[start : stop + 1]) - done) & TRAINING:
        # the local Ray that the first stage starts serves the training stages too: with its dashboard
        init_ray(cfg.ray, dashboard=True)
    for name, stage in stages[start : stop + 1]:
        if name in done:
            print(f"pipeline: {name}: already done in {run_dir}, skipped", file=sys.stderr, flush=True)
            results[name] = manifest[name]
            continue
        print(f"pipeline: {name}: running", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            out = run_checked(name, READS.get(name, ()), stage, cfg, run_dir)
        except BaseException as exc:  # recorded for the operator, then raised as is
            failed = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000],
                      "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
            record_stage(run_dir, name, failed, to_dict(cfg))
            raise
        entry = {**out, "status": "ok", "seconds": round(time.monotonic() - started, 1)}
        record_stage(run_dir, name, entry, to_dict(cfg))
        print(f"pipeline: {name}: done in {entry['seconds']}s", file=sys.stderr, flush=True)
        results[name] = entry
    return results


def _clear_checkpoints(cfg: Config, run_dir: Path, name: str) -> None:
    """A forced training stage starts afresh: Ray Train would otherwise restore the finished run."""
    settings = {"train_sft": cfg.train_sft, "train_rl": cfg.train_rl}.get(name)
    if settings is None:
        return
    import pyarrow.fs as pafs

    fs, target = checkpoint_folder(*checkpoint_location(settings.storage_path, run_dir, name))
    if fs.get_file_info(target).type != pafs.FileType.NotFound:
        print(f"pipeline: {name}: dropping the checkpoints of its previous run in {target}", file=sys.stderr)
        fs.delete_dir(target)
