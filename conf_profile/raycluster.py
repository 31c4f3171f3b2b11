"""Connecting to Ray: the cluster of a submitted job (RAY_ADDRESS), else a local one on this machine."""

from __future__ import annotations

import os

from conf_profile.core.settings import RayConfig


def init_ray(cfg: RayConfig | None = None) -> None:
    """Idempotent. Under ``ray job submit`` (RAY_ADDRESS set) Ray joins the job's cluster; otherwise a
    local Ray starts with ``cfg``'s CPU count and object store size."""
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # readable Ray Train logs (docs/architecture.md 3)
    common = {"log_to_driver": True, "logging_level": "WARNING"}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(**common)
        return
    # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner polls every second:
    # without it, a training stage floods the log with "Failed to query Ray Train Controller actor state"
    # for the rest of the job, and a dead controller's placement group would never be released.
    common["include_dashboard"] = True
    # address="local": a new Ray of this job's own, never another one running on this machine (ray start)
    ray.init(address="local", num_cpus=cfg.local_num_cpus, object_store_memory=cfg.local_object_store_mb * 2**20,
             **common)  # fmt: skip
