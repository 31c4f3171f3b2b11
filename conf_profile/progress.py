"""Progress of an engine stage on the cluster: the workers add the rows they finish to a counter actor; a
thread in the driver prints users done, users/s and an ETA (core.progress) every ``run.progress_interval_s``
seconds, and once more at the end. Ray Data's own bars count blocks, which for an engine stage stay at
``0/1`` for minutes."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from conf_profile.core.progress import duration, progress_line


class _Counter:
    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def value(self) -> int:
        return self.rows


def count_rows(batch: Any, counter: Any) -> Any:
    """A map_batches step that passes the batch through and adds its rows to the counter (fire and forget:
    a lost counter never fails the stage)."""
    counter.add.remote(batch.num_rows)
    return batch


class Progress:
    """``with Progress("label", "teacher t", rows=2000, rows_per_user=5, interval_s=30) as p:`` then add
    ``.map_batches(count_rows, fn_kwargs={"counter": p.counter}, ...)`` to the dataset it executes; users
    are counted in rows / rows_per_user (K samples per user)."""

    def __init__(self, stage: str, what: str, rows: int, rows_per_user: int, interval_s: float) -> None:
        self.stage, self.what, self.interval = stage, what, interval_s
        self.per_user = max(1, rows_per_user)
        self.users = -(-rows // self.per_user)
        self.counter: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> Progress:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.counter = ray.remote(num_cpus=0, max_restarts=0)(_Counter).options(scheduling_strategy=here).remote()
        self._started = time.monotonic()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._loop, name=f"{self.stage}-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if exc[0] is None:
            self._print(final=True)
        ray.kill(self.counter)

    def done_users(self) -> float | None:
        import ray

        try:
            return ray.get(self.counter.value.remote(), timeout=10) / self.per_user
        except Exception:  # the counter's node is gone: the stage goes on without progress lines
            return None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._print()

    def _print(self, final: bool = False) -> None:
        done = self.done_users()
        if done is None:
            return
        elapsed = time.monotonic() - self._started
        line = progress_line(done, self.users, elapsed)
        if final:
            line = line.split(", ETA")[0] + f", in {duration(elapsed)}"
        print(f"{self.stage}: {self.what}: {line}", file=sys.stderr, flush=True)
