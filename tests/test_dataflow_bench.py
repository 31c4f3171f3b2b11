"""The dataflow benchmark's parts: the stand-in engine's outputs are valid for the parsers the stages use,
and the benchmark runs ingest -> label -> aggregate -> infer through the stages' own code with the
stand-in swapped in (no vLLM engine), every user accounted for."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conf_profile.bench.dataflow import DATE, bench_config
from conf_profile.bench.stand_in import StandInEngine, stand_in_output
from conf_profile.core.labeling import output_schema, parse_output
from conf_profile.core.student import parse_student_output, student_schema
from conf_profile.core.taxonomy import load_taxonomy

TAX = load_taxonomy()


def test_stand_in_outputs_parse_as_teacher_and_student_outputs() -> None:
    teacher = json.loads(json.dumps(output_schema(TAX)))  # as the engine receives it: JSON text
    student = json.loads(json.dumps(student_schema(TAX)))
    values = set()
    for key in (f"u{i}:{j}:t" for i in range(50) for j in range(2)):
        parsed = parse_output(stand_in_output(teacher, key), TAX)
        assert parsed.error is None and all(j is not None for j in parsed.judgements.values())
        assert parse_student_output(stand_in_output(student, key), TAX).error is None
        values.add(parsed.judgements["gender"].value)
    assert len(values) > 1  # the users do not all get the same answer: the vote has something to do
    assert stand_in_output(teacher, "u1:0:t") != stand_in_output(teacher, "u1:1:t")  # samples differ


def test_stand_in_refuses_a_negative_rate() -> None:
    with pytest.raises(ValueError, match="rows_per_s"):
        StandInEngine(-1)


def test_bench_config_labels_every_user_with_one_teacher() -> None:
    cfg = bench_config("/logs", 3, "/model")
    assert cfg.input.logs == "/logs" and cfg.label.max_users == 0 and cfg.label.heldout_users == 0
    assert [(t.model, t.samples) for t in cfg.label.teachers] == [("/model", 3)]
    assert cfg.infer.date == DATE
    default_tokens = (cfg.label.teachers[0].max_tokens, cfg.infer.max_tokens)
    cut = bench_config("/logs", 1, "/model", max_tokens=64)  # --engine tiny: every output cut at 64 tokens
    assert (cut.label.teachers[0].max_tokens, cut.infer.max_tokens) == (64, 64) != default_tokens


@pytest.mark.ray
@pytest.mark.slow
def test_dataflow_runs_every_stage_with_the_stand_in(tmp_path) -> None:
    import ray

    from conf_profile.bench.dataflow import STAGES, run_stage
    from conf_profile.engines import use_stand_in
    from conf_profile.models import tiny_model_dir
    from conf_profile.synthetic.dataset import write_dataset

    write_dataset(tmp_path / "in", users=40, seed=3, files=2)
    model = str(tiny_model_dir(None))
    cfg = bench_config(str(tmp_path / "in" / "logs"), 2, model, {"ray": {"local_num_cpus": 2}})
    use_stand_in(StandInEngine(rows_per_s=500))
    try:
        figures = [run_stage(stage, cfg, tmp_path / "run", model, interval=0.2) for stage in STAGES]
    finally:
        use_stand_in(None)
        ray.shutdown()
    by = {f.stage: f for f in figures}
    assert list(by) == ["ingest", "label", "aggregate", "infer"]
    users = by["ingest"].users
    assert users == pq.read_table(tmp_path / "run" / "documents").num_rows > 30
    assert by["label"].users == users and by["label"].rows == 2 * users
    samples = pq.read_table(tmp_path / "run" / "teacher_samples")
    assert samples.column("error").null_count == samples.num_rows  # every stand-in output parsed
    assert by["aggregate"].users == users and by["aggregate"].rows == users * len(TAX.attributes)
    profiles = pq.read_table(tmp_path / "run" / "profiles" / f"dt={DATE}")
    assert by["infer"].users == users == profiles.num_rows
    assert profiles.column("error").null_count == users
    assert set(pc.unique(profiles.column("user_id")).to_pylist()) == set(samples.column("user_id").to_pylist())
    for f in figures:  # sampled while the stage ran: Ray's processes are in the tree, the driver is in it
        assert f.seconds > 0 and 100 < f.driver_peak_mib < f.tree_peak_mib
