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


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_ends_each_job_with_one_line_and_status_130(tmp_path, monkeypatch, capsys) -> None:
    """A job interrupted by Ctrl-C (KeyboardInterrupt in its main thread, wherever it waits) prints where its
    finished work is and how to go on, and exits 130 as the shell reports a Ctrl-C, instead of a traceback."""
    import argparse

    import pytest

    import jobs.ingest
    import jobs.nightly
    import jobs.pipeline
    from conf_profile.cli import run_stage
    from conf_profile.core.settings import Config
    from conf_profile.stages import nightly as nightly_stage

    def status(call) -> tuple[int, str]:
        with pytest.raises(SystemExit) as ended:
            call()
        return ended.value.code, capsys.readouterr().err

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = argparse.Namespace(run_dir=str(run_dir))
    monkeypatch.setattr(sys, "argv", ["jobs/label.py"])  # fail() names the job by its script
    code, err = status(lambda: run_stage("label", args, Config(), _ctrl_c))
    assert code == 130 and err.count("\n") == 1
    assert f"label: interrupted (Ctrl-C); what it finished is kept in {run_dir}" in err
    assert f"the same command with --run-dir {run_dir} goes on" in err

    monkeypatch.setattr(sys, "argv", ["jobs/pipeline.py"])
    monkeypatch.setattr(jobs.pipeline, "run_pipeline", _ctrl_c)
    code, err = status(lambda: jobs.pipeline.main(["--run-dir", str(tmp_path / "p")]))
    assert code == 130 and f"pipeline: interrupted (Ctrl-C); what it finished is kept in {tmp_path / 'p'}" in err

    monkeypatch.setattr(sys, "argv", ["jobs/ingest.py"])
    monkeypatch.setattr(jobs.ingest, "run_ingest", _ctrl_c)
    code, err = status(lambda: jobs.ingest.main(["--logs", str(tmp_path), "--run-dir", str(tmp_path / "i")]))
    again = f"the same command with --run-dir {tmp_path / 'i'} does it again"
    assert code == 130 and f"ingest: interrupted (Ctrl-C) before it was done: {again}" in err

    monkeypatch.setattr(sys, "argv", ["jobs/nightly.py"])
    monkeypatch.setattr(nightly_stage, "run_nightly", _ctrl_c)
    code, err = status(lambda: jobs.nightly.main(["--logs", str(tmp_path), "--date", "2026-11-01", "--model",
                                                  str(tmp_path), "--out", str(tmp_path / "n")]))  # fmt: skip
    assert code == 130 and "nightly: interrupted (Ctrl-C); the tables are as the last published night left them" in err
    assert "runs 2026-11-01 again" in err
