"""The benchmarks' measuring: a command's wall time, the peak memory of its process tree, and the memory limit
that stops a side which would not fit in the machine."""

from __future__ import annotations

import sys

import pytest

from conf_profile.bench.measure import run_measured

# a child that holds about 400 MiB of touched memory for two seconds, then prints and exits 0
HOG = "import time; b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(2); print('done')"


def test_a_command_under_its_limit_runs_to_its_end_with_its_peak_measured() -> None:
    m = run_measured([sys.executable, "-c", HOG], interval=0.1, limit_mib=4000)
    assert m.returncode == 0 and m.output.strip() == "done" and m.stopped_at_mib is None
    assert 400 < m.peak_mib < 4000
    assert m.seconds >= 2


def test_a_command_past_its_limit_is_killed_and_says_where_it_stopped() -> None:
    m = run_measured([sys.executable, "-c", HOG], interval=0.1, limit_mib=200)
    assert m.stopped_at_mib is not None and m.stopped_at_mib > 200
    assert m.returncode != 0 and "done" not in m.output  # killed before it printed
    assert m.seconds < 2


# A stand-in for `jobs.bench _raw-vllm`: prints its result line, then a log line (as vLLM's engine processes
# do while they shut down); exits 1 when told to run the in-process engine and FAIL is in its arguments.
RAW_STAND_IN = (
    "import json, sys; engine = sys.argv[sys.argv.index('--engine') + 1]; "
    "sys.exit(1) if 'FAIL' in sys.argv and engine == 'in-process' else None; "
    "print(json.dumps({'tokens': len(engine), 'seconds': 1.0})); print('(EngineCore) shutdown')"
)


def test_the_raw_engine_runs_are_one_per_layout_each_read_from_its_result_line(tmp_path) -> None:
    from jobs.bench import RAW_ENGINES, _raw_runs

    runs = _raw_runs([sys.executable, "-c", RAW_STAND_IN], tmp_path)
    assert [engine for engine, _, _ in runs] == list(RAW_ENGINES) == ["multiprocess", "in-process"]
    assert [raw["tokens"] for _, _, raw in runs] == [len("multiprocess"), len("in-process")]
    assert all(m.returncode == 0 for _, m, _ in runs)
    with pytest.raises(SystemExit, match=r"raw vllm \(in-process\) failed"):
        _raw_runs([sys.executable, "-c", RAW_STAND_IN, "FAIL"], tmp_path)
    # each run's log kept as it ended, the failed run's too
    assert "(EngineCore) shutdown" in (tmp_path / "raw-multiprocess.log").read_text()
    assert (tmp_path / "raw-in-process.log").read_text() == ""
