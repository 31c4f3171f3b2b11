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


def run_measured(cmd: list[str], interval: float = 1.0, env: dict[str, str] | None = None) -> Measured:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss(root))
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    return Measured(time.monotonic() - started, peak[0] / 2**20, proc.returncode, output)


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
