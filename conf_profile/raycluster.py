"""Connecting to Ray (the cluster of a submitted job, else a local one) and the Ray Data settings every stage
shares: light tasks, a Parquet read that honours them, no memory warning beside engine actors."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path
from typing import Any

from conf_profile.core.settings import RayConfig

API_SERVER_ADDRESS = "RAY_API_SERVER_ADDRESS"  # where Ray's clients find the state API
SMALL_CPUS = 0.1  # the tokenizer/template/pre/post stages are light; whole CPUs for them starve the engine


def init_ray(cfg: RayConfig | None = None, dashboard: bool = False) -> None:
    """Idempotent. Under ``ray job submit`` (RAY_ADDRESS set) Ray joins the job's cluster; otherwise a
    local Ray starts with ``cfg``'s CPU count and object store size, and with its dashboard only when this
    process will train (``dashboard``: Ray Train needs the state API it serves, below). Without it a local
    Ray starts 1-2 s sooner on 2 cores and its daemons take about 3% of a core less while the job runs."""
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # readable Ray Train logs (docs/architecture.md 3)
    common: dict[str, Any] = {"log_to_driver": True, "logging_level": "WARNING"}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
        return
    # address="local": a new Ray of this job's own, never another one running on this machine (ray start)
    common.update(address="local", num_cpus=cfg.local_num_cpus, object_store_memory=cfg.local_object_store_mb * 2**20)
    if not dashboard:
        ray.init(include_dashboard=False, **common)
        return
    # Ray Train's controller learns that the workers are done (or dead) by polling them, every 2 s by default;
    # on a one-machine Ray a poll is cheap, and each training stage ends sooner (about 3 s of a tiny fit).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner polls every second:
    # without it, a training stage floods the log with "Failed to query Ray Train Controller actor state"
    # for the rest of the job, and a dead controller's placement group would never be released.
    # The cleaner finds the API by RAY_API_SERVER_ADDRESS, else by the machine's last `ray start`
    # (/tmp/ray/ray_current_cluster): a Ray started there earlier and gone since makes each of its calls
    # wait for that dead head, and every training stage then ends 12 s or more after its last step. So
    # the dashboard gets a port chosen here, and Ray's processes, which inherit the environment this process
    # has while it starts them, are told where it is. (Not this process after that: the variable overrides
    # the address of every job-submission and state client it would make later.)
    port = free_port()
    saved = os.environ.get(API_SERVER_ADDRESS)
    os.environ[API_SERVER_ADDRESS] = f"http://127.0.0.1:{port}"
    common.update(include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port)
    try:
        ray.init(**common)
    finally:
        if saved is None:
            os.environ.pop(API_SERVER_ADDRESS, None)
        else:
            os.environ[API_SERVER_ADDRESS] = saved


# Ray's worker processes listen on ports 10002-19999 (its min/max_worker_port defaults), and the ports Ray
# leaves to the kernel (port 0) come from the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range).
PORTS_FROM = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a Ray process to bind a moment later: drawn
    at random between Ray's worker ports and the kernel's ephemeral range, where the kernel picks the local
    port of every outgoing connection and above whose low end Ray draws the ports it chooses itself. A port
    the kernel handed out here was once taken by the time the dashboard bound it ("address already in use";
    Ray gives an explicit dashboard port no second try, and the job failed after a minute). Without room
    below the ephemeral range, a port the kernel hands out."""
    try:
        ephemeral_low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768  # Linux's default
    candidates = range(PORTS_FROM, ephemeral_low)
    for port in random.sample(candidates, min(len(candidates), 64)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_parquet(files: list[str], columns: list[str]) -> Any:
    """ray.data.read_parquet with light read tasks. Ray Data's newer read path lists files in a task that asks
    for a whole CPU whatever the read's num_cpus; on a small node whose other cores the engine actors hold, it
    never gets one (the dataset hangs), so the read goes through the path that honours num_cpus."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(files, columns=columns, num_cpus=SMALL_CPUS)
    finally:
        ctx.use_datasource_v2 = v2


def quiet_memory_warning() -> None:
    """The engine actors hold a model: Ray Data's "high memory" warning would repeat every 30 s for nothing.
    Called before any dataset is built: a dataset keeps the context it was created with."""
    import ray.data

    ray.data.DataContext.get_current().issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1
