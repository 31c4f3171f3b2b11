"""The vote benchmark's parts: the generated samples, the pandas baseline against aggregate_tables, and the
equality check that decides whether the benchmark's two sides agree; the quality benchmark's gold set; the
comparison of two runs' stages on the same held-out users."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conf_profile.bench.vote_pandas import aggregate_pandas
from conf_profile.core.profiles import PREDICTION_SCHEMA
from conf_profile.core.settings import AggregateConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.aggregate import aggregate_tables
from conf_profile.synthetic.samples import teacher_samples_table
from jobs.bench import _gold_users, _pandas_tables, _same_aggregation, main

TAX = load_taxonomy()


def test_generated_samples_have_the_asked_shape_and_rates() -> None:
    t = teacher_samples_table(TAX, users=2000, samples=3, teachers=2, seed=1, abstain_rate=0.2, error_rate=0.05)
    assert t.num_rows == 12000 and len(t.column("user_id").unique()) == 2000
    failed = t.column("error").is_valid().to_numpy(zero_copy_only=False)
    assert 0.04 < failed.mean() < 0.06
    assert t.column("gender_value").null_count == failed.sum()  # a failed sample has no judgements
    answered = pc.drop_null(t.column("gender_value")).to_numpy(zero_copy_only=False)
    assert 0.17 < (answered == "unknown").mean() < 0.23
    assert set(pc.unique(t.column("teacher")).to_pylist()) == {"teacher0", "teacher1"}


def _write(folder, votes, sft, rl, cal) -> None:
    folder.mkdir()
    for name, table in (("votes", votes), ("sft", sft), ("rl", rl)):
        pq.write_table(table, folder / f"{name}.parquet")
    (folder / "calibration.json").write_text(json.dumps(cal["attributes"]))


def test_pandas_baseline_and_aggregate_tables_agree_and_the_check_sees_a_difference(tmp_path) -> None:
    samples = teacher_samples_table(TAX, users=400, samples=4, teachers=2, seed=2)
    ids = samples.column("user_id").unique()
    ids = ids.filter(pa.array(np.arange(len(ids)) % 9 != 0))  # some users without a document
    docs = pa.table({"user_id": ids, "document": pc.binary_join_element_wise("log of ", ids, '\n"quoted"', "")})
    acfg = AggregateConfig()
    project = aggregate_tables(samples, docs, TAX, acfg, "teacher0")
    baseline = _pandas_tables(aggregate_pandas(samples.to_pandas(), docs.to_pandas(), TAX, "teacher0",
                                               list(acfg.confidence_weights), acfg.eval_percent,
                                               acfg.sft_min_mean_level, acfg.rl_easy_min_confidence,
                                               acfg.rl_min_mean_level))  # fmt: skip
    assert project.sft.num_rows > 300 and project.rl.num_rows > 100
    _write(tmp_path / "a", project.votes, project.sft, project.rl, project.calibration)
    _write(tmp_path / "b", *baseline[:3], baseline[3])
    assert _same_aggregation(tmp_path / "a", tmp_path / "b") is True
    values = project.votes.column("value").to_pylist()
    for row in (5, 17):
        values[row] = "unknown" if values[row] != "unknown" else "male"
    tampered = project.votes.set_column(project.votes.column_names.index("value"), "value", pa.array(values))
    _write(tmp_path / "c", tampered, project.sft, project.rl, project.calibration)
    assert _same_aggregation(tmp_path / "a", tmp_path / "c") == "votes.value: 2 rows differ"


def test_the_quality_benchmarks_gold_set_is_the_last_users_by_id_in_a_new_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the MovieLens truth is read from data/movielens/ under the working directory
    args = argparse.Namespace(data="movielens", gold=2)
    (tmp_path / "data" / "movielens").mkdir(parents=True)
    truth = pa.table({"user_id": ["u3", "u1", "u4", "u2"], "gender": ["f", "m", None, "f"]})
    pq.write_table(truth, tmp_path / "data" / "movielens" / "truth.parquet")
    gold = _gold_users(args, [], tmp_path / "runs" / "new")  # the folder does not exist yet
    assert gold == tmp_path / "runs" / "new" / "gold.parquet"
    assert pq.read_table(gold).to_pylist() == [{"user_id": "u3", "gender": "f"}, {"user_id": "u4", "gender": None}]


ML_TAXONOMY = str(Path(__file__).resolve().parents[1] / "conf_profile" / "data" / "taxonomy_movielens.yaml")


def _compared_run(root: Path, heldout: list[str], gender: dict[str, str]) -> Path:
    """A finished run as bench compare reads it: its manifest (settings), the held-out users' votes and the
    student's gender predictions (``gender``: user -> value; the other attributes unanswered)."""
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(json.dumps({"config": {"taxonomy": {"path": ML_TAXONOMY}}, "stages": {}}))
    (root / "votes_heldout").mkdir()
    n = len(heldout)
    votes = {"user_id": heldout, "attribute": ["gender"] * n, "value": ["male"] * n, "level": [3] * n}
    for col in ("single_value", "majority_value"):
        votes[col] = votes["value"]
    for col in ("single_confidence", "majority_share", "raw_confidence", "confidence", "mean_confidence"):
        votes[col] = [0.6] * n
    pq.write_table(pa.table(votes), root / "votes_heldout" / "part-00000.parquet")
    rows = [{"user_id": u, "attribute": "gender", "value": v, "confidence": 0.7, "level": 3} for u, v in gender.items()]
    (root / "predictions" / "student_sft").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=PREDICTION_SCHEMA), root / "predictions" / "student_sft" / "p.parquet"
    )
    return root


def test_compare_scores_both_runs_on_the_held_out_users_of_both(tmp_path, capsys) -> None:
    users = [f"u{i:02d}" for i in range(40)]
    truth = {u: ("female" if i % 2 else "male") for i, u in enumerate(users)}
    pq.write_table(pa.table({"user_id": users, "gender": [truth[u] for u in users], "age_group": [None] * 40,
                             "occupation": [None] * 40}), tmp_path / "truth.parquet")  # fmt: skip
    # A answers everyone "male" (right on half); B answers the truth for all but u00..u03 (left unanswered);
    # u39 is held out in A only: the comparison leaves it out.
    a = _compared_run(tmp_path / "a", users, {u: "male" for u in users})
    b = _compared_run(tmp_path / "b", users[:39], {u: truth[u] for u in users[4:]})
    main(["compare", str(a), str(b), "--stages", "student_sft", "--truth", str(tmp_path / "truth.parquet")])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["users"] == 39
    row = result["stages"]["student_sft"]
    # gender, 39 users with truth: A answers 39, right on 20 (u00, u02, ..., u38): F1 2 x 20 / (39 + 39); B
    # answers 35, all right: 2 x 35 / (35 + 39). Macro F1 is over the three attributes (the two without truth
    # count 0, as in the ladder); coverage over the attributes with truth.
    f1_a, f1_b = 40 / 78 / 3, 70 / 74 / 3
    assert row["a"]["f1"] == pytest.approx(f1_a, abs=1e-4) and row["b"]["f1"] == pytest.approx(f1_b, abs=1e-4)
    assert row["a"]["coverage"] == 1.0 and row["b"]["coverage"] == pytest.approx(35 / 39, abs=1e-4)
    assert row["f1"]["low"] > 0 and row["f1"]["diff"] == pytest.approx(f1_b - f1_a, abs=2e-4)
    assert "| student_sft | 0.171 | 0.315 |" in out


def test_compare_names_what_is_missing(tmp_path) -> None:
    users = ["u1", "u2"]
    pq.write_table(pa.table({"user_id": users, "gender": ["male", "female"]}), tmp_path / "truth.parquet")
    with pytest.raises(SystemExit, match="missing columns"):  # the MovieLens taxonomy has three attributes
        main(["compare", *(str(_compared_run(tmp_path / x, users, {})) for x in "xy"), "--truth",
              str(tmp_path / "truth.parquet")])  # fmt: skip
    pq.write_table(pa.table({"user_id": users, "gender": ["male", "female"], "age_group": [None, None],
                             "occupation": [None, None]}), tmp_path / "truth.parquet")  # fmt: skip
    a = _compared_run(tmp_path / "a", users, {"u1": "male"})
    b = _compared_run(tmp_path / "b", ["u3"], {"u3": "male"})
    with pytest.raises(SystemExit, match="no held-out users in both"):
        main(["compare", str(a), str(b), "--truth", str(tmp_path / "truth.parquet")])
    with pytest.raises(SystemExit, match="no predictions of student_rl"):
        main(["compare", str(a), str(a), "--stages", "student_rl", "--truth", str(tmp_path / "truth.parquet")])
    with pytest.raises(SystemExit, match="not a run directory"):
        main(["compare", str(a), str(tmp_path / "nowhere")])
