"""jobs.aggregate and jobs.evaluate end to end on a run directory whose teacher samples are written by the
test (a stand-in for the label stage, with known votes); the tiny model's real samples go through the same
stages in tests/test_label.py."""

from __future__ import annotations

import json
import random
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conf_profile.core.labeling import prompt_version
from conf_profile.core.taxonomy import load_taxonomy
from jobs import aggregate as aggregate_job
from jobs import evaluate as evaluate_job

TAXONOMY = load_taxonomy()


@pytest.fixture
def run_dir(tmp_path):
    """60 users, a teacher with 3 samples each: mostly the true value at a confidence that tracks it."""
    rng = random.Random(7)
    version, users, samples, truth = prompt_version(TAXONOMY), [], [], []
    for i in range(60):
        uid = f"u{i:03d}"
        users.append({"user_id": uid, "document": f"document of {uid}", "content_hash": f"h{i}"})
        true = {a.name: rng.choice(a.value_names[:-1]) for a in TAXONOMY.attributes}
        truth.append({"user_id": uid, **true})
        for k in range(3):
            row = {"user_id": uid, "teacher": "teacher", "teacher_weight": 1.0, "sample": k, "seed": k,
                   "model": "stand-in", "prompt_version": version, "taxonomy_version": TAXONOMY.version,
                   "content_hash": f"h{i}", "raw_text": "{}", "error": None, "rationale": f"r{uid}{k}",
                   "input_tokens": 10, "output_tokens": 10}  # fmt: skip
            for a in TAXONOMY.attributes:
                right = rng.random() < 0.7
                value = true[a.name] if right else rng.choice(a.value_names)
                row.update({f"{a.name}_value": value, f"{a.name}_confidence": rng.randint(3, 5) if right else
                            rng.randint(1, 3), f"{a.name}_evidence": f"e-{value}"})  # fmt: skip
            samples.append(row)
    (tmp_path / "documents").mkdir()
    (tmp_path / "teacher_samples" / "teacher").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(users), tmp_path / "documents" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(samples), tmp_path / "teacher_samples" / "teacher" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(truth), tmp_path / "truth.parquet")
    return tmp_path


def test_aggregate_writes_votes_calibration_and_training_sets(run_dir, capsys) -> None:
    aggregate_job.main(["--run-dir", str(run_dir), "--set", "aggregate.eval_percent=20"])
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]["aggregate"]
    assert manifest["users_voted"] == 60 and manifest["samples_used"] == 180
    votes = pq.read_table(run_dir / "votes")
    assert votes.num_rows == 60 * len(TAXONOMY.attributes)
    levels = [v for v in votes.column("level").to_pylist() if v is not None]
    counts = [levels.count(k) for k in range(1, 6)]
    assert min(counts) > 0.5 * len(levels) / 5, counts  # label-free levels: roughly balanced
    sft_train, sft_eval = (
        pq.read_table(run_dir / "sft" / "train.parquet"),
        pq.read_table(run_dir / "sft" / "eval.parquet"),
    )
    assert sft_train.num_rows + sft_eval.num_rows == 60 and 0 < sft_eval.num_rows < 25
    rl = pq.read_table(run_dir / "rl" / "train.parquet")
    assert rl.num_rows == manifest["rl_users"] == manifest["rl_difficulty"]["keep"]
    assert sum(manifest["rl_difficulty"].values()) == 60
    assert "votes:" in capsys.readouterr().out


def _sorted(table: pa.Table, keys: list[str]) -> list[dict]:
    return table.sort_by([(k, "ascending") for k in keys]).to_pylist()


@pytest.mark.parametrize("mode", ["label_free", "gold", "em"])
def test_buckets_give_the_tables_of_the_whole_table(run_dir, tmp_path_factory, mode) -> None:
    """Seven hash buckets of users (the stage's bounded-memory path) write the rows one bucket writes,
    label-free, with a gold set (the calibrator is fitted once on every bucket's votes) and with three
    teachers weighted by their EM reliability (fitted once on every bucket's samples), and the same
    calibrator; one user's samples split over two files and an old prompt's sample are handled as one."""
    first = pq.read_table(run_dir / "teacher_samples" / "teacher" / "part-0.parquet")
    extra = first.slice(0, 2)
    old = extra.set_column(extra.schema.get_field_index("prompt_version"), "prompt_version", pa.array(["old", "old"]))
    pq.write_table(old, run_dir / "teacher_samples" / "teacher" / "part-1.parquet")
    flags = ["--set", f"aggregate.gold={run_dir / 'truth.parquet'}"] if mode == "gold" else []
    teachers = 1
    if mode == "em":  # two more teachers: one that agrees with the first, one that always says the first value
        flags, teachers = ["--set", "aggregate.teacher_weights=em"], 3
        same = first.set_column(first.schema.get_field_index("teacher"), "teacher", pa.array(["same"] * len(first)))
        fixed = same.set_column(same.schema.get_field_index("teacher"), "teacher", pa.array(["fixed"] * len(same)))
        for a in TAXONOMY.attributes:
            i = fixed.schema.get_field_index(f"{a.name}_value")
            fixed = fixed.set_column(i, f"{a.name}_value", pa.array([a.value_names[0]] * len(fixed)))
        for name, table in (("same", same), ("fixed", fixed)):
            (run_dir / "teacher_samples" / name).mkdir()
            pq.write_table(table, run_dir / "teacher_samples" / name / "part-0.parquet")
    outputs = {}
    for buckets in (1, 7):
        other = tmp_path_factory.mktemp(f"buckets{buckets}")
        for name in ("documents", "teacher_samples"):
            shutil.copytree(run_dir / name, other / name)
        aggregate_job.main(["--run-dir", str(other), "--set", f"aggregate.buckets={buckets}", *flags])
        entry = json.loads((other / "manifest.json").read_text())["stages"]["aggregate"]
        assert entry["buckets"] == buckets and entry["samples_used"] == 180 * teachers and entry["users_voted"] == 60
        assert entry["users_documents"] == 60 and entry["users_unlabeled"] == 0
        if mode == "em":
            accuracy = {t: entry["teacher_reliability"]["gender"][t]["accuracy"] for t in ("same", "fixed")}
            assert accuracy["same"] > accuracy["fixed"], entry["teacher_reliability"]["gender"]
        for volatile in ("buckets", "seconds", "finished_at"):
            entry.pop(volatile)
        outputs[buckets] = (
            entry,
            json.loads((other / "calibration.json").read_text()),
            _sorted(pq.read_table(other / "votes"), ["user_id", "attribute"]),
            *(_sorted(pq.read_table(other / f), ["user_id"]) for f in ("sft/train.parquet", "sft/eval.parquet",
                                                                          "rl/train.parquet")),
        )  # fmt: skip
        assert not (other / "_staging" / "aggregate").exists()
    assert outputs[1] == outputs[7]
    assert outputs[7][1]["method"] == ("isotonic" if mode == "gold" else "label_free")


def test_saved_calibration_is_reused_without_refit(run_dir, tmp_path_factory) -> None:
    aggregate_job.main(["--run-dir", str(run_dir)])
    saved = tmp_path_factory.mktemp("saved") / "calibration.json"
    cal = json.loads((run_dir / "calibration.json").read_text())
    cal["attributes"]["gender"]["thresholds"] = [0.0, 0.0, 0.0, 0.0]  # every answered gender -> level 5
    saved.write_text(json.dumps(cal))
    aggregate_job.main(["--run-dir", str(run_dir), "--calibration", str(saved)])
    assert json.loads((run_dir / "calibration.json").read_text()) == cal
    votes = pq.read_table(run_dir / "votes").to_pylist()
    assert {v["level"] for v in votes if v["attribute"] == "gender" and v["value"] != "unknown"} == {5}
    entry = json.loads((run_dir / "manifest.json").read_text())["stages"]["aggregate"]
    assert entry["calibration"] == f"reused {saved}"


def test_reusing_a_calibration_fitted_with_other_vote_weights_is_refused(run_dir, capsys) -> None:
    aggregate_job.main(["--run-dir", str(run_dir)])
    saved = run_dir / "saved.json"
    saved.write_text((run_dir / "calibration.json").read_text())
    with pytest.raises(SystemExit):
        aggregate_job.main(["--run-dir", str(run_dir), "--calibration", str(saved),
                            "--set", "aggregate.confidence_weights=[1, 1, 1, 1, 1]"])  # fmt: skip
    assert "confidence_weights" in capsys.readouterr().err


def test_gold_calibration_and_evaluation_report(run_dir) -> None:
    aggregate_job.main(["--run-dir", str(run_dir), "--gold", str(run_dir / "truth.parquet")])
    assert json.loads((run_dir / "calibration.json").read_text())["method"] == "isotonic"
    evaluate_job.main(["--run-dir", str(run_dir), "--truth", str(run_dir / "truth.parquet")])
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    stages = metrics["stages"]
    assert list(stages) == ["teacher_single", "teacher_majority", "teacher_vote_raw", "teacher_vote"]
    # the stand-in teacher is right 70% of the time per sample: voting over 3 samples beats one sample
    assert stages["teacher_vote"]["macro"]["f1"] > stages["teacher_single"]["macro"]["f1"]
    assert stages["teacher_vote"]["macro"]["ece"] <= stages["teacher_vote_raw"]["macro"]["ece"]
    assert "in-sample" in (run_dir / "report" / "index.html").read_text()


def test_heldout_samples_are_voted_scored_and_never_trained_on(run_dir) -> None:
    # the last 20 users' samples move to teacher_samples_heldout/ (as label.heldout_users writes them)
    samples = pq.read_table(run_dir / "teacher_samples")
    scored = pa.array([f"u{i:03d}" for i in range(40, 60)])
    held = pc.is_in(samples.column("user_id"), value_set=scored)
    pq.write_table(samples.filter(pc.invert(held)), run_dir / "teacher_samples" / "teacher" / "part-0.parquet")
    (run_dir / "teacher_samples_heldout" / "teacher").mkdir(parents=True)
    pq.write_table(samples.filter(held), run_dir / "teacher_samples_heldout" / "teacher" / "part-0.parquet")
    aggregate_job.main(["--run-dir", str(run_dir)])
    entry = json.loads((run_dir / "manifest.json").read_text())["stages"]["aggregate"]
    assert entry["users_voted"] == 40 and entry["heldout_users_voted"] == 20
    heldout = pq.read_table(run_dir / "votes_heldout")
    assert set(heldout.column("user_id").to_pylist()) == set(scored.to_pylist())
    trained = set(pq.read_table(run_dir / "sft", columns=["user_id"]).column("user_id").to_pylist())
    trained |= set(pq.read_table(run_dir / "rl", columns=["user_id"]).column("user_id").to_pylist())
    assert trained and not trained & set(scored.to_pylist())
    # calibrated by the training users' calibrator (applied, not refitted): same raw -> same level
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert cal["attributes"]["gender"]["fitted_on"] <= 40
    # the report scores the teacher stages on the held-out users, with the ladder on exactly them
    evaluate_job.main(["--run-dir", str(run_dir), "--truth", str(run_dir / "truth.parquet")])
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    assert {s["users"] for s in metrics["stages"].values()} == {20}
    ladder = metrics["ladder"]
    assert ladder["users"] == 20 and list(ladder["stages"]) == list(metrics["stages"])
    vote, single = ladder["stages"]["teacher_vote"], ladder["stages"]["teacher_single"]
    assert vote["f1"] == pytest.approx(metrics["stages"]["teacher_vote"]["macro"]["f1"], abs=1e-3)  # two roundings
    assert vote["vs_previous"]["stage"] == "teacher_vote_raw" and "vs_previous" not in single
    assert (run_dir / "report" / "ladder.png").exists() and (run_dir / "report" / "risk_coverage.png").exists()
    assert "Quality ladder" in (run_dir / "report" / "index.html").read_text()


def test_each_teacher_alone_gets_a_ladder_row_before_the_vote_of_all(run_dir) -> None:
    # a second teacher that always answers the first value; with two teachers EM is not identifiable, so the
    # fixed weights stay even with aggregate.teacher_weights=em
    samples = pq.read_table(run_dir / "teacher_samples").to_pylist()
    second = []
    for row in samples:
        other = {**row, "teacher": "fixed"}
        other.update({f"{a.name}_value": a.value_names[0] for a in TAXONOMY.attributes})
        second.append(other)
    scored = {f"u{i:03d}" for i in range(40, 60)}
    (run_dir / "teacher_samples_heldout" / "teacher").mkdir(parents=True)
    every = samples + second
    pq.write_table(pa.Table.from_pylist([r for r in every if r["user_id"] not in scored]),
                   run_dir / "teacher_samples" / "teacher" / "part-0.parquet")  # fmt: skip
    pq.write_table(pa.Table.from_pylist([r for r in every if r["user_id"] in scored]),
                   run_dir / "teacher_samples_heldout" / "teacher" / "part-0.parquet")  # fmt: skip
    aggregate_job.main(["--run-dir", str(run_dir), "--set", "aggregate.teacher_weights=em"])
    assert "teacher_reliability" not in json.loads((run_dir / "manifest.json").read_text())["stages"]["aggregate"]
    evaluate_job.main(["--run-dir", str(run_dir), "--truth", str(run_dir / "truth.parquet")])
    ladder = json.loads((run_dir / "report" / "metrics.json").read_text())["ladder"]["stages"]
    assert list(ladder) == ["teacher_single", "teacher_majority", "teacher_fixed_alone", "teacher_teacher_alone",
                            "teacher_vote_raw", "teacher_vote"]  # fmt: skip
    # the rows tell the teachers apart: the constant one is worse than the real one on its own
    assert ladder["teacher_teacher_alone"]["f1"] > ladder["teacher_fixed_alone"]["f1"]


def test_missing_inputs_are_clear_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        aggregate_job.main(["--run-dir", str(tmp_path)])
    assert exc.value.code == 2 and "run ingest" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate_job.main(["--run-dir", str(tmp_path), "--truth", str(tmp_path / "none.parquet")])
    assert "no such file" in capsys.readouterr().err
