"""Shared test setup: `gpu` tests are skipped (and reported as skipped) where no CUDA GPU is present."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _has_cuda_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _has_cuda_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
        for item in gpu_items:
            item.add_marker(skip)


_CURRENT: list[pytest.Item | None] = [None]


def pytest_configure(config: pytest.Config) -> None:
    """With CONF_PROFILE_NO_RAY=1 (make test-fast), starting Ray in this process fails at once unless the
    test being set up or run carries the ``ray`` marker, so the fast selection stays free of Ray."""
    if os.environ.get("CONF_PROFILE_NO_RAY") != "1":
        return
    import ray

    real_init = ray.init

    def guarded_init(*args, **kwargs):
        item = _CURRENT[0]
        if item is None or "ray" not in item.keywords:
            raise RuntimeError(f"{item.nodeid if item else 'collection'} starts Ray: mark it @pytest.mark.ray")
        return real_init(*args, **kwargs)

    ray.init = guarded_init


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _CURRENT[0] = item  # before the item's fixtures (module-scoped ones included) are set up


@pytest.fixture(scope="module")
def ingested_run(tmp_path_factory):
    """``make(name, users, seed)`` -> a run directory holding the documents of that many built-in users,
    ingested with a local Ray that stays up for the module (the stage under test reuses it)."""
    import ray

    from conf_profile.core.settings import IngestConfig
    from conf_profile.stages.ingest import run_ingest
    from conf_profile.synthetic.dataset import write_dataset

    def make(name: str, users: int, seed: int):
        root = tmp_path_factory.mktemp(name)
        write_dataset(root / "in", users=users, seed=seed, files=1)
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        run_ingest(IngestConfig(), str(root / "in" / "logs"), root)
        return root

    yield make
    ray.shutdown()
