"""Pseudonymous ids (pure), and the checks that stop a job before any work (missing key, missing inputs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from conf_profile.core.privacy import pseudonym, pseudonymize

ROOT = Path(__file__).resolve().parents[1]


def test_pseudonyms_are_keyed_stable_and_distinct() -> None:
    key = b"key"
    assert pseudonym("u1", key) == pseudonym("u1", key)
    assert pseudonym("u1", key) != pseudonym("u2", key) and pseudonym("u1", key) != pseudonym("u1", b"other")
    table = pseudonymize(pa.table({"user_id": ["u1", None, "u1"], "x": [1, 2, 3]}), key)
    assert table.column("user_id").to_pylist() == [pseudonym("u1", key), None, pseudonym("u1", key)]
    assert table.column_names == ["user_id", "x"] and table.column("x").to_pylist() == [1, 2, 3]


def test_a_missing_key_stops_the_job_before_any_work_and_names_the_variable(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    run_dir = str(tmp_path / "r")
    cmd = [sys.executable, "-m", "jobs.pipeline", "--run-dir", run_dir, "--set", "privacy.pseudonymize_ids=true"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "CONF_PROFILE_ID_KEY" in res.stderr
    assert not (tmp_path / "r").exists()


def test_missing_input_paths_stop_the_pipeline_before_any_work(tmp_path) -> None:
    run_dir = tmp_path / "r"
    for key in ("input.logs", "input.truth"):
        cmd = [sys.executable, "-m", "jobs.pipeline", "--run-dir", str(run_dir), "--set", f"{key}={tmp_path / 'nope'}"]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 2 and f"{key}=" in res.stderr and "does not exist" in res.stderr
    assert not run_dir.exists()


def test_the_key_comes_from_the_named_environment_variable_only_when_pseudonymizing(monkeypatch) -> None:
    from conf_profile.core.config import build
    from conf_profile.core.privacy import id_key
    from conf_profile.core.settings import Config

    monkeypatch.setenv("MY_ID_KEY", "s3cret")
    on = build(Config, {"privacy": {"pseudonymize_ids": True, "key_env": "MY_ID_KEY"}})
    assert id_key(on) == b"s3cret"
    assert id_key(build(Config, {"privacy": {"key_env": "MY_ID_KEY"}})) is None
