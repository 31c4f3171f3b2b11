"""The dataflow benchmark's stages: ingest -> label -> aggregate -> infer on one run directory, the engine
replaced by the stand-in (conf_profile.bench.stand_in) or the real one on the tiny model, each stage in a
process of its own (its driver, as ``python -m jobs.<stage>`` is), timed and its memory sampled.

Memory, sampled every ``interval`` seconds while a stage runs: the driver's resident set (RSS of this
process) and the whole process tree's proportional set (PSS of this process and every descendant: Ray's
GCS, raylet, workers and object store pages counted once).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from conf_profile.bench.measure import _tree_pss
from conf_profile.core.config import build
from conf_profile.core.settings import Config

STAGES = ("ingest", "label", "aggregate", "infer")
DATE = "2026-01-01"  # the profiles' partition; fixed so that runs compare


@dataclass(frozen=True)
class StageFigures:
    stage: str
    seconds: float
    users: int  # users the stage took in (ingest: users in the logs' documents)
    rows: int  # rows the stage wrote (documents, samples, votes, profiles)
    driver_peak_mib: float
    tree_peak_mib: float


def bench_config(
    logs: str, samples: int, model: str, overrides: dict[str, Any] | None = None, max_tokens: int | None = None
) -> Config:
    """Every user labeled (no held-out set), one teacher with ``samples`` samples, one student output;
    ``max_tokens``: each teacher sample's and profile's output tokens at most (None: the defaults)."""
    teacher: dict[str, Any] = {"name": "t", "model": model, "samples": samples}
    infer: dict[str, Any] = {"date": DATE}
    if max_tokens is not None:
        teacher["max_tokens"] = infer["max_tokens"] = max_tokens
    data = {
        "input": {"logs": logs},
        "label": {"max_users": 0, "heldout_users": 0, "teachers": [teacher]},
        "infer": infer,
        **(overrides or {}),
    }
    return build(Config, data)


class _Sampler:
    """Peak driver RSS and tree PSS since the last reset, sampled on a thread."""

    def __init__(self, interval: float) -> None:
        self.interval, self.me = interval, psutil.Process()
        self.driver = self.tree = 0.0
        self.lock, self.done = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def sample(self) -> None:
        rss, pss = self.me.memory_info().rss, _tree_pss(self.me)
        with self.lock:
            self.driver, self.tree = max(self.driver, rss), max(self.tree, pss)

    def take(self) -> tuple[float, float]:
        self.sample()
        with self.lock:
            peaks = (self.driver / 2**20, self.tree / 2**20)
            self.driver = self.tree = 0.0
        return peaks

    def _loop(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()


def run_stage(name: str, cfg: Config, run_dir: Path, model: str, interval: float = 0.5) -> StageFigures:
    """One stage on ``run_dir`` (the engine already replaced by engines.use_stand_in, or real), in this process (the
    stage's driver, as ``python -m jobs.<stage>`` would be). Ray is started first, so that its processes are
    in the tree but its start is not in the stage's time."""
    import pyarrow.parquet as pq

    from conf_profile.raycluster import init_ray
    from conf_profile.stages import aggregate, infer, ingest, label

    init_ray(cfg.ray)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "ingest": lambda: ingest.run(cfg, run_dir),
        "label": lambda: label.run(cfg, run_dir),
        "aggregate": lambda: aggregate.run(cfg, run_dir),
        "infer": lambda: infer.run_infer(cfg, run_dir, model, DATE),
    }
    with _Sampler(interval) as sampler:
        sampler.take()
        started = time.monotonic()
        entry = steps[name]()
        seconds = time.monotonic() - started
        driver, tree = sampler.take()
    users, rows = _counts(name, entry, run_dir, pq)
    print(f"dataflow: {name}: {seconds:.1f} s, {users:,} users, driver peak {driver:.0f} MiB, "
          f"tree peak {tree:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
    return StageFigures(name, round(seconds, 2), users, rows, round(driver), round(tree))


def _counts(stage: str, entry: dict[str, Any], run_dir: Path, pq: Any) -> tuple[int, int]:
    def rows(folder: Path) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(folder.rglob("*.parquet")))

    if stage == "ingest":
        n = rows(run_dir / "documents")
        return n, n
    if stage == "label":
        return int(entry["users"]), rows(run_dir / "teacher_samples")
    if stage == "aggregate":
        return int(entry["users_voted"]), rows(run_dir / "votes")
    return int(entry["users"]), rows(run_dir / "profiles" / f"dt={DATE}")


def figures_json(figures: StageFigures) -> dict[str, Any]:
    return asdict(figures)
