"""Shared test setup: `gpu` tests are skipped (and reported as skipped) where no CUDA GPU is present; the
fixtures that several test modules share (one quick pipeline run, ingested run directories)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conf_profile.raycluster import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK_DATE = "2026-11-20"  # the quick run's infer.date
# The killed run of the interruption test (on an object store): two greedy teachers, one sample each, labeled one
# after the other. A teacher's rows are written when its engine is done with them, so a kill at the first
# labeled rows lands while the second one's engine starts: inside the label stage, whatever the timing.
TWO_TEACHERS = (
    "label.teachers=[{name: t, model: tiny, samples: 1, temperature: 0, max_tokens: 400}, "
    "{name: t2, model: tiny, samples: 1, temperature: 0, max_tokens: 400}]"
)
QUICK_HELDOUT = ("--set", "label.heldout_users=6")  # the teacher also labels 6 users for scoring only


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
            # address="local": a Ray of this test's own, never one another process runs on this machine
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        run_ingest(IngestConfig(), str(root / "in" / "logs"), root)
        return root

    yield make
    ray.shutdown()


def kill_session(sid: int, timeout_s: float = 60) -> None:
    """SIGKILL every live process of session ``sid`` (a process started with start_new_session=True and all
    it spawned: a Ray head's daemons, a driver's workers, which have process groups of their own), and only
    those: a Ray another process runs on this machine is left alone (``ray stop`` would kill it too)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ps = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
        left = [int(pid) for pid, s, stat in (line.split()[:3] for line in ps.splitlines() if line.strip())
                if int(s) == sid and not stat.startswith("Z")]  # fmt: skip
        if not left:
            return
        assert time.monotonic() < deadline, f"processes of session {sid} still alive: {left}"
        for pid in left:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def job_submit(run_dir: Path, cache: Path, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    """The quick pipeline under `ray job submit` on a fresh local head (killed afterwards, it alone); (the
    CLI's result, the token the head, CLI and job shared)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Token authentication, as a shared cluster should run (Ray 2.59 turns it on for local clusters anyway):
    # the head, the CLI and the job share the token through the environment.
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    # Every port the head listens on is a free one: the defaults (dashboard 8265, its agent 52365, the Ray
    # client 10001) may be another Ray's on this machine, and a head whose agent cannot listen takes no job
    # ("No available agent to submit job").
    gcs, dashboard, agent, client = free_port(), free_port(), free_port(), free_port()
    head = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={agent}",
            f"--ray-client-server-port={client}", "--disable-usage-stats"]  # fmt: skip
    # its own session: its daemons (and the job's processes, their children) share it, so the head is stopped
    # by killing that session, not by `ray stop`, which would stop every Ray of this machine
    started = subprocess.Popen(head, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        out, _ = started.communicate(timeout=180)
        assert started.returncode == 0, out[-3000:]
        # This environment's interpreter by its path, and PATH left as it is: with the environment's bin
        # folder first on PATH, pip's ninja (not the system's, which every other run uses) built the training's
        # DeepSpeed op, and torch's extension cache rebuilt it whenever the two alternated (README,
        # Installation details).
        job = [sys.executable, "-m", "jobs.pipeline", "--config", "jobs/configs/quick.yaml", "--run-dir", str(run_dir),
               "--set", f"models.cache_dir={cache}", "--set", f"infer.date={QUICK_DATE}", *extra]  # fmt: skip
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--runtime-env",
                  "jobs/runtime_env.yaml", "--working-dir", ".", "--", *job]  # fmt: skip
        res = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        kill_session(started.pid)
    return res, env["RAY_AUTH_TOKEN"]


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """A local S3-compatible server (moto's, in a thread of this process, on a free port of 127.0.0.1) with
    the bucket ``runs``; the environment that points pyarrow at it (AWS_ENDPOINT_URL and test credentials)
    is set for the session, so that jobs started from the tests, and their Ray workers, inherit it.
    Yields the endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="runs")
        yield env["AWS_ENDPOINT_URL"]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@dataclass(frozen=True)
class QuickRun:
    run_dir: Path
    cache: Path  # the models cache (the tiny model, built once for every test that shares it)
    submit: subprocess.CompletedProcess  # the `ray job submit` CLI's result
    token: str  # the Ray auth token the head, the CLI and the job shared


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> QuickRun:
    """One uninterrupted quick pipeline run (jobs/configs/quick.yaml, 6 held-out users) under `ray job
    submit`, shared: test_pipeline_e2e checks it and then resumes it, runs side jobs on it and redoes its
    inference (which replaces the profiles with the same users, as that test asserts); test_interruptions
    compares a killed and resumed run against its documents, keys and profiled users, which none of those
    later steps change."""
    root = tmp_path_factory.mktemp("quick")
    run_dir, cache = root / "run", root / "cache"
    submit, token = job_submit(run_dir, cache, *QUICK_HELDOUT)
    return QuickRun(run_dir, cache, submit, token)
