"""Batch inference through the real Ray Data LLM + vLLM (CPU) path on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.core.config import build
from conf_profile.core.profiles import calibration_hash
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def run_dir(ingested_run) -> Path:
    root = ingested_run("infer", users=6, seed=5)
    cal = {
        "attributes": {"gender": {"thresholds": [0.1, 0.2, 0.3, 0.4], "level_confidence": [0.1, 0.3, 0.5, 0.7, 0.9]}}
    }
    (root / "calibration.json").write_text(json.dumps(cal))
    return root


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_profiles_one_row_per_user_and_a_pseudonymized_rerun_replaces_the_date(run_dir, monkeypatch) -> None:
    from conf_profile.core.privacy import pseudonym
    from conf_profile.models import tiny_model_dir
    from conf_profile.stages.infer import run_infer

    # infer.gold: 3 of the 6 users with their true gender (the other attributes unknown to the gold set)
    truth = pq.read_table(run_dir / "in" / "truth.parquet").sort_by("user_id").slice(0, 3).to_pylist()
    gold = [{"user_id": r["user_id"], **{a: r[a] if a == "gender" else None for a in load_taxonomy().attribute_names}}
            for r in truth]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(gold), run_dir / "gold.parquet")
    cfg = build(Config, overrides=[f"models.cache_dir={run_dir / 'cache'}", "infer.max_tokens=600",
                                   f"infer.gold={run_dir / 'gold.parquet'}"])  # fmt: skip
    model = str(tiny_model_dir(run_dir / "cache"))
    entry = run_infer(cfg, run_dir, model, date="2026-11-01", predictions="student_gold")
    profiles = pq.read_table(run_dir / "profiles" / "dt=2026-11-01")
    documents = pq.read_table(run_dir / "documents", columns=["user_id"])
    assert entry["users"] == profiles.num_rows == documents.num_rows == 6
    # the gold users are profiled, their answers refit the levels' confidence, and they stay out of predictions/
    student_cal = json.loads((run_dir / "calibration_student.json").read_text())
    assert entry["gold"]["users"] == 3 and entry["gold"]["missing"] == 0
    assert student_cal["fitted_for"] == Path(model).name and student_cal["method"] == "none+student_gold"
    assert student_cal["attributes"]["gender"]["thresholds"] == [0.1, 0.2, 0.3, 0.4]  # the run's calibrator kept
    answered = sum(r["gender"] not in ("unknown", None) for r in profiles.to_pylist() if r["user_id"] in
                   {g["user_id"] for g in gold})  # fmt: skip
    assert entry["gold"]["answers"]["gender"] == answered and entry["gold"]["answers"]["occupation"] == 0
    table = student_cal["attributes"]["gender"]["level_confidence"]
    assert set(profiles.column("calibration_hash").to_pylist()) == {calibration_hash(student_cal)}
    scored = pq.read_table(run_dir / "predictions" / "student_gold").column("user_id").unique().to_pylist()
    assert sorted(scored) == sorted(set(documents.column("user_id").to_pylist()) - {g["user_id"] for g in gold})
    assert sorted(profiles.column("user_id").to_pylist()) == sorted(documents.column("user_id").to_pylist())
    taxonomy = load_taxonomy()
    for column in ("user_id", "rationale", "model", "taxonomy_version", "run_id", "generated_at"):
        assert column in profiles.column_names
    for a in taxonomy.attribute_names:
        assert {f"{a}", f"{a}_confidence", f"{a}_level"} <= set(profiles.column_names)
    for row in profiles.to_pylist():
        # the grammar holds for the random tiny model too; an output cut at max_tokens is kept with its reason
        assert row["error"] in (None, "not_json"), row["error"]
        if row["error"] is None:
            assert all(row[a] in taxonomy.attribute(a).value_names for a in taxonomy.attribute_names)
            if row["gender"] != "unknown":  # level -> the refitted table (without gold answers: the run's)
                expected = table if answered else [0.1, 0.3, 0.5, 0.7, 0.9]
                assert row["gender_confidence"] == expected[row["gender_level"] - 1]
    long = pq.read_table(run_dir / "profile_attributes" / "dt=2026-11-01")
    assert long.num_rows == 6 * len(taxonomy.attribute_names)

    # Same date again, with pseudonymized ids: the date's partition is replaced, not appended to, and the
    # product tables carry only pseudonyms (the raw ids of the first run are gone).
    monkeypatch.setenv("TEST_ID_KEY", "k3y-for-the-test")
    cfg = build(Config, overrides=[f"models.cache_dir={run_dir / 'cache'}", "infer.max_tokens=64",
                                   "privacy.pseudonymize_ids=true", "privacy.key_env=TEST_ID_KEY"])  # fmt: skip
    entry = run_infer(cfg, run_dir, model, date="2026-11-01")
    assert pq.read_table(run_dir / "profiles" / "dt=2026-11-01").num_rows == 6
    assert [p.name for p in (run_dir / "profiles").iterdir()] == ["dt=2026-11-01"]
    raw = documents.column("user_id").to_pylist()
    expected = sorted(pseudonym(u, b"k3y-for-the-test") for u in raw)
    for table in ("profiles", "profile_attributes"):
        ids = pq.read_table(run_dir / table / "dt=2026-11-01").column("user_id").to_pylist()
        assert sorted(set(ids)) == expected and not set(ids) & set(raw)
    assert entry["pseudonymized"] is True and "k3y-for-the-test" not in json.dumps(entry)
    assert not (run_dir / "calibration_student.json").exists()  # no gold this time: these tables are not its
    # predictions (eval_name): the next test (k samples), and test_pipeline_e2e (one sample, the held-out users)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_self_consistency_votes_k_outputs_into_one_row_per_user_of_the_first_max_users(run_dir, capfd) -> None:
    from conf_profile.models import tiny_model_dir
    from conf_profile.stages.infer import run_infer

    # infer.max_users=4 as well: the first 4 users by id (picked by a sort on the cluster before the engines start)
    overrides = [f"models.cache_dir={run_dir / 'cache'}", "infer.max_tokens=600", "infer.samples=3",
                 "infer.temperature=0.8", "infer.max_users=4", "run.progress_interval_s=1"]  # fmt: skip
    cfg = build(Config, overrides=overrides)
    entry = run_infer(cfg, run_dir, str(tiny_model_dir(run_dir / "cache")), eval_name="student_k3")
    err = capfd.readouterr().err  # progress: 12 outputs counted by the workers = 4 users of k = 3
    assert "infer: student: 4/4 users (100%)" in err and "users/s, ETA" in err
    assert entry["samples"] == 3 and entry["outputs"] == 12 and entry["users"] == 4 and entry["left_out"] == 2
    predictions = pq.read_table(run_dir / "predictions" / "student_k3")
    taxonomy = load_taxonomy()
    assert predictions.num_rows == 4 * len(taxonomy.attribute_names)  # one row per user and attribute
    assert {"user_id", "attribute", "value", "confidence", "level"} <= set(predictions.column_names)
    first = sorted(pq.read_table(run_dir / "documents", columns=["user_id"]).column("user_id").to_pylist())[:4]
    assert sorted(set(predictions.column("user_id").to_pylist())) == first
    answered = [r for r in predictions.to_pylist() if r["value"] != "unknown"]
    assert all(1 <= r["level"] <= 5 and 0.0 <= r["confidence"] <= 1.0 for r in answered)


def _out(value: str, level: int) -> str:
    judgement = {"level": level, "evidence": "e"}
    attrs = {a: {**judgement, "value": value if a == "gender" else "unknown"} for a in load_taxonomy().attribute_names}
    return json.dumps({"rationale": value, **attrs})


def test_requests_repeat_each_user_k_times_with_its_sample_seeds() -> None:
    import pyarrow as pa

    from conf_profile.core.labeling import sample_seed
    from conf_profile.engines import with_samples

    out = with_samples(pa.table({"user_id": ["a", "b"], "document": ["da", "db"]}), 3, 7, "student")
    assert out.column("user_id").to_pylist() == ["a"] * 3 + ["b"] * 3
    assert out.column("document").to_pylist() == ["da"] * 3 + ["db"] * 3
    assert out.column("sample").to_pylist() == [0, 1, 2, 0, 1, 2]
    assert out.column("seed").to_pylist()[4] == sample_seed(7, "student", "b", 1)


def test_vote_makes_one_row_per_user_in_sample_order_and_keeps_engine_errors() -> None:
    import pyarrow as pa

    from conf_profile.stages.infer import _OUTPUTS, _vote

    taxonomy = load_taxonomy()
    male = taxonomy.attribute("gender").value_names[0]
    other = taxonomy.attribute("gender").value_names[1]
    outputs = pa.Table.from_pylist([  # shuffled, as a group-by hands them over
        {"user_id": "b", "sample": 1, "generated_text": None, "engine_error": "prompt too long", "output_tokens": 0},
        {"user_id": "a", "sample": 2, "generated_text": _out(other, 2), "engine_error": None, "output_tokens": 5},
        {"user_id": "a", "sample": 0, "generated_text": _out(male, 5), "engine_error": None, "output_tokens": 7},
        {"user_id": "a", "sample": 1, "generated_text": _out(male, 5), "engine_error": None, "output_tokens": 6},
        {"user_id": "b", "sample": 0, "generated_text": None, "engine_error": "prompt too long", "output_tokens": 0},
    ], schema=_OUTPUTS)  # fmt: skip
    provenance = {"model": "m", "taxonomy_version": "t", "run_id": "r", "generated_at": "g"}
    rows = {r["user_id"]: r for r in _vote(outputs, taxonomy, None, (0.2, 0.4, 0.6, 0.8, 1.0), provenance).to_pylist()}
    assert set(rows) == {"a", "b"}
    assert rows["a"]["gender"] == male and rows["a"]["error"] is None and rows["a"]["rationale"] == male
    assert (rows["a"]["_outputs"], rows["a"]["_output_tokens"]) == (3, 18)
    assert rows["b"]["error"] == "engine: prompt too long" and rows["b"]["gender"] == "unknown"
    assert rows["b"]["model"] == "m" and rows["b"]["run_id"] == "r"


def test_attribute_rows_carry_the_provenance_of_their_user() -> None:
    import pyarrow as pa

    from conf_profile.core.profiles import profile_row, profile_schema
    from conf_profile.stages.infer import PROVENANCE, attributes_schema, attributes_table

    taxonomy = load_taxonomy()
    value = taxonomy.attribute("gender").value_names[0]
    prov = {"taxonomy_version": "t", "run_id": "r", "generated_at": "g"}
    rows = [{**profile_row(u, _out(value, 4), taxonomy, None), "model": f"m{u}", **prov} for u in ("a", "b")]

    table = attributes_table(pa.Table.from_pylist(rows, schema=profile_schema(taxonomy, PROVENANCE)), taxonomy)
    assert table.num_rows == 2 * len(taxonomy.attribute_names)
    assert [(r["user_id"], r["model"]) for r in table.to_pylist()] == [("a", "ma"), ("b", "mb")] * len(
        taxonomy.attribute_names
    )
    assert table.schema == attributes_schema(taxonomy)


@pytest.mark.ray
def test_no_documents_write_empty_tables_without_starting_an_engine(tmp_path) -> None:
    from conf_profile.core.profiles import profile_schema
    from conf_profile.stages.infer import PROVENANCE, attributes_schema, run_infer
    from conf_profile.storage import DOCUMENT_SCHEMA

    run = tmp_path / "run"
    (run / "documents").mkdir(parents=True)
    pq.write_table(DOCUMENT_SCHEMA.empty_table(), run / "documents" / "part-00000.parquet")
    # a model folder that no engine could load: the job must not try
    model = tmp_path / "not-loadable"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = build(Config, overrides=[f"models.cache_dir={tmp_path / 'cache'}"])
    entry = run_infer(cfg, run, str(model), date="2026-11-03")
    assert entry["users"] == 0 and entry["outputs"] == 0 and entry["left_out"] == 0
    profiles = pq.read_table(run / "profiles" / "dt=2026-11-03")
    attributes = pq.read_table(run / "profile_attributes" / "dt=2026-11-03")
    assert profiles.num_rows == attributes.num_rows == 0
    assert profiles.schema.remove_metadata() == profile_schema(load_taxonomy(), PROVENANCE)
    assert attributes.schema.remove_metadata() == attributes_schema(load_taxonomy())
