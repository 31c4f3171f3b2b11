"""The pipeline under `ray job submit` against a real local Ray head (127.0.0.1), with the checked-in
runtime environment: what a data engineer runs against a cluster."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conf_profile.pipeline.runner import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.train
@pytest.mark.e2e
def test_the_quick_pipeline_runs_under_ray_job_submit(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this environment's
    # Token authentication, as a shared cluster should run (Ray 2.59 turns it on for local clusters anyway):
    # the head, the CLI and the job share the token through the environment.
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)})
    gcs, dashboard = _free_port(), _free_port()
    head = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--disable-usage-stats"]  # fmt: skip
    started = subprocess.run(head, env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    run_dir = tmp_path / "run"
    try:
        job = ["python", "-m", "jobs.pipeline", "--config", "jobs/configs/quick.yaml", "--run-dir", str(run_dir),
               "--set", f"models.cache_dir={tmp_path / 'cache'}", "--set", "infer.date=2026-11-21"]  # fmt: skip
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--runtime-env",
                  "jobs/runtime_env.yaml", "--working-dir", ".", "--", *job]  # fmt: skip
        res = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(manifest["stages"][s]["status"] == "ok" for s in STAGE_NAMES)
    profiles = pq.read_table(run_dir / "profiles" / "dt=2026-11-21")
    assert profiles.num_rows == manifest["stages"]["ingest"]["users_out"] > 0
    assert "every input user accounted for" in res.stdout  # the job's own summary, streamed back by ray job submit
    assert env["RAY_AUTH_TOKEN"] not in res.stdout + res.stderr  # the secret is never printed
