"""Shared test setup: `gpu` tests are skipped (and reported as skipped) where no CUDA GPU is present."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def ingested_run(tmp_path_factory):
    """``make(name, users, seed)`` -> a run directory holding the documents of that many built-in users,
    ingested with a local Ray that stays up for the module (the stage under test reuses it)."""
    import ray

    from conf_profile.core.settings import IngestConfig
    from conf_profile.ingest import run_ingest
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
