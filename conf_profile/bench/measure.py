"""Measuring a command for benchmarks: wall time and peak memory of its whole process tree.

Memory is the proportional set size (PSS) summed over the process and all its descendants (Ray's raylet,
GCS and workers included), so shared pages such as the object store are counted once, not per process.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_mib: float
    returncode: int
    output: str
    stopped_at_mib: float | None = None  # the command was killed when its tree passed this memory limit


def run_measured(
    cmd: list[str], interval: float = 1.0, env: dict[str, str] | None = None, limit_mib: float | None = None
) -> Measured:
    """Runs ``cmd`` to its end, sampling its tree's memory every ``interval`` seconds. With ``limit_mib``, the
    tree is killed as soon as a sample passes it (a baseline that would not fit in this machine's memory),
    and ``stopped_at_mib`` says so: its seconds are then a lower bound on what the whole run needs."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0.0]
    stopped: list[float] = []
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss(root))
            if limit_mib is not None and peak[0] / 2**20 > limit_mib and not stopped:
                stopped.append(peak[0] / 2**20)
                _kill_tree(root)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    return Measured(time.monotonic() - started, peak[0] / 2**20, proc.returncode, output,
                    stopped[0] if stopped else None)  # fmt: skip


def _kill_tree(root: psutil.Process) -> None:
    try:
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            continue


def _tree_pss(root: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            continue
    return total
