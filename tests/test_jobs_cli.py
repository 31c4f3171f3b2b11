"""The job entry points as users run them: `python -m jobs.<name>` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _job(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_make_logs_with_config_set_and_run_dir(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  users: 40\n  files: 2\n")
    run_dir = tmp_path / "run"
    res = _job(
        "jobs.make_logs",
        "--config",
        str(config),
        "--set",
        "data.seed=3",
        "--run-dir",
        str(run_dir),
        "--bad-fraction",
        "0.1",
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["users"] == 40 and out["seed"] == 3 and out["files"] == 2 and out["bad_fraction"] == 0.1
    assert pq.read_table(run_dir / "synthetic" / "truth.parquet").num_rows == 40
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["make_logs"]["rows"] == out["rows"]
    assert manifest["config"]["data"]["users"] == 40


def test_default_run_dir_is_new_and_latest_points_at_it(tmp_path) -> None:
    res = _job("jobs.make_logs", "--users", "5", "--set", f"run.runs_root={tmp_path / 'runs'}")
    assert res.returncode == 0, res.stderr
    latest = (tmp_path / "runs" / "latest").resolve()
    assert (latest / "synthetic" / "truth.parquet").exists()


def test_bad_configuration_fails_before_work_with_the_key_named(tmp_path) -> None:
    res = _job("jobs.make_logs", "--out", str(tmp_path / "x"), "--set", "data.file=2")
    assert res.returncode == 2
    assert "unknown config key 'data.file'; did you mean 'files'?" in res.stderr
    assert not (tmp_path / "x").exists()
    res = _job("jobs.make_logs", "--out", str(tmp_path / "x"), "--config", str(tmp_path / "none.yaml"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_every_job_documents_its_options() -> None:
    res = _job("jobs.make_logs", "--help")
    assert res.returncode == 0
    for flag in ("--config", "--set", "--run-dir", "--users", "--out", "--seed", "--bad-fraction"):
        assert flag in res.stdout


@pytest.mark.slow
def test_pipeline_runs_and_a_rerun_skips_completed_stages(tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = (
        "jobs.pipeline",
        "--run-dir",
        str(run_dir),
        "--set",
        "data.users=30",
        "--set",
        "label.teachers=[{name: t, model: tiny, samples: 2, max_tokens: 1500}]",
        "--set",
        "label.max_users=6",
        "--set",
        "models.student=tiny",
        "--set",
        f"models.cache_dir={tmp_path / 'cache'}",
    )
    first = _job(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["builtin_data"]["users"] == 30
    assert manifest["stages"]["label"]["teachers"]["t"]["rows"] == 12
    assert manifest["stages"]["aggregate"]["users_voted"] == 6
    assert (run_dir / "models" / "sft" / "config.json").exists()
    rl = manifest["stages"]["train_rl"]
    assert "skipped" in rl or (run_dir / "models" / "rl" / "config.json").exists()
    assert manifest["stages"]["evaluate"]["stages"]["teacher_vote"]["f1"] is not None
    assert (run_dir / "report" / "index.html").exists()
    assert "teacher_vote" in first.stdout and str(run_dir) in first.stdout
    second = _job(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in (
        "builtin_data",
        "ingest",
        "embedded_models",
        "label",
        "aggregate",
        "train_sft",
        "train_rl",
        "evaluate",
    ):
        assert f"{stage}: already done" in second.stderr
