"""The vote benchmark's parts: the generated samples, the pandas baseline against aggregate_tables, and the
equality check that decides whether the benchmark's two sides agree; the quality benchmark's gold set."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.bench.vote_pandas import aggregate_pandas
from conf_profile.core.settings import AggregateConfig
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.aggregate import aggregate_tables
from conf_profile.synthetic.samples import teacher_samples_table
from jobs.bench import _gold_users, _pandas_tables, _same_aggregation

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
