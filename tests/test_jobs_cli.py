"""The job entry points as users run them: `python -m jobs.<name>` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

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


def test_jobs_on_an_existing_run_take_the_runs_own_settings(tmp_path, capsys) -> None:
    """A run made with another taxonomy is evaluated without repeating its flags; a flag still wins, and the
    job says which keys it changes. (In-process: load_run_config is what the run's jobs call first.)"""
    import pytest

    from conf_profile.cli import job_parser, load_run_config
    from conf_profile.core.config import build, to_dict
    from conf_profile.core.settings import Config

    movielens = str(ROOT / "conf_profile" / "data" / "taxonomy_movielens.yaml")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    made = build(Config, overrides=[f"taxonomy.path={movielens}", "aggregate.eval_percent=20"])
    (run_dir / "manifest.json").write_text(json.dumps({"config": to_dict(made), "stages": {}}))
    parser = job_parser("python -m jobs.evaluate", "")

    cfg = load_run_config(parser.parse_args(["--run-dir", str(run_dir)]))
    assert cfg.taxonomy.path == movielens and cfg.aggregate.eval_percent == 20
    assert "the run's settings from" in capsys.readouterr().err

    cfg = load_run_config(parser.parse_args(["--run-dir", str(run_dir), "--set", "aggregate.eval_percent=30"]))
    assert cfg.taxonomy.path == movielens and cfg.aggregate.eval_percent == 30
    assert "the flags change aggregate.eval_percent" in capsys.readouterr().err

    fresh = tmp_path / "fresh"
    fresh.mkdir()  # no manifest yet: the flags alone
    assert load_run_config(parser.parse_args(["--run-dir", str(fresh)])).taxonomy.path is None

    broken = to_dict(made)
    broken["label"]["no_such_key"] = 1
    (run_dir / "manifest.json").write_text(json.dumps({"config": broken, "stages": {}}))
    with pytest.raises(SystemExit) as exc:
        load_run_config(parser.parse_args(["--run-dir", str(run_dir)]))
    assert exc.value.code == 2 and "unknown config key 'label.no_such_key'" in capsys.readouterr().err
