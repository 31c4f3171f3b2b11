"""Aggregate: teacher_samples/ -> votes/, calibration.json, sft/, rl/ (the logic is in conf_profile.core).

One process with pyarrow and numpy: the vote is vectorized over the whole table (6 attributes x 5 samples x
1M users is ~30M judgements, a few GB of arrays), so no Ray cluster is needed for this stage.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core import calibration as calib
from conf_profile.core.aggregate import current_samples, rl_rows, sft_examples, teacher_reliability, vote_samples
from conf_profile.core.labeling import prompt_version
from conf_profile.core.metrics import load_truth
from conf_profile.core.settings import AggregateConfig, Config
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy, load_taxonomy
from conf_profile.storage import (
    CALIBRATION,
    DOCUMENTS,
    HELDOUT_SAMPLES,
    HELDOUT_VOTES,
    HELDOUT_VOTES_BY_TEACHER,
    RL,
    SFT,
    TEACHER_SAMPLES,
    VOTES,
    VOTES_HELDOUT,
    check_reads,
    write_table_atomic,
    write_text_atomic,
)


def run_aggregate(cfg: Config, run_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    acfg = cfg.aggregate
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    check_reads("aggregate", READS, run_dir)
    documents = pq.read_table(DOCUMENTS.path(run_dir), columns=["user_id", "document", "content_hash"])
    samples = pq.read_table(TEACHER_SAMPLES.path(run_dir))
    samples = current_samples(samples, documents, prompt_version(taxonomy))
    if samples.num_rows == 0:
        raise FileNotFoundError(f"{run_dir / 'teacher_samples'} has no samples for the current documents and prompt")
    primary = cfg.label.teachers[0].name
    result = aggregate_tables(samples, documents, taxonomy, acfg, primary)
    votes, cal, sft, rl = result.votes, result.calibration, result.sft, result.rl
    write_table_atomic(votes, run_dir / "votes" / "votes.parquet")
    heldout = _heldout_votes(run_dir, documents, taxonomy, primary, cal, acfg.confidence_weights, result.reliability)
    write_text_atomic(run_dir / "calibration.json", json.dumps(cal, indent=2, allow_nan=False))
    for split in ("train", "eval"):
        write_table_atomic(sft.filter(pc.equal(sft.column("split"), split)), run_dir / "sft" / f"{split}.parquet")
    write_table_atomic(rl, run_dir / "rl" / "train.parquet")
    sft_dropped, decisions, reliability = result.sft_dropped, result.decisions, result.reliability
    voted_users = len(votes.column("user_id").unique())
    entry = {
        "users_documents": documents.num_rows,
        "users_voted": voted_users,
        "users_unlabeled": documents.num_rows - voted_users,  # e.g. beyond label.max_users: the student profiles them
        "samples_used": samples.num_rows,
        "abstain_share": round(float(pc.mean(pc.equal(votes.column("value"), UNKNOWN)).as_py()), 4),
        "calibration": cal["method"] if not acfg.calibration else f"reused {acfg.calibration}",
        "level_counts": _level_counts(votes),
        "sft_train": int(pc.sum(pc.equal(sft.column("split"), "train")).as_py() or 0),
        "sft_eval": int(pc.sum(pc.equal(sft.column("split"), "eval")).as_py() or 0),
        "sft_filtered": sft_dropped,
        "rl_users": rl.num_rows,
        "rl_difficulty": decisions,
        "seconds": round(time.monotonic() - started, 1),
    }
    if heldout is not None:
        entry["heldout_users_voted"] = heldout
    if reliability is not None:  # fitted on the training users' samples; the held-out votes use the same
        entry["teacher_reliability"] = reliability
    return entry


@dataclass(frozen=True)
class Aggregated:
    votes: pa.Table  # calibrated: level and confidence per row
    calibration: dict[str, Any]
    sft: pa.Table
    sft_dropped: int
    rl: pa.Table
    decisions: dict[str, int]
    reliability: dict[str, Any] | None
    seconds: dict[str, float]  # per phase: vote, calibration, sft_rl


def aggregate_tables(
    samples: pa.Table, documents: pa.Table, taxonomy: Taxonomy, acfg: AggregateConfig, primary: str
) -> Aggregated:
    """The stage's work on tables in memory (current samples -> calibrated votes, SFT and RL sets), no I/O
    beyond a reused calibrator or the gold file; the vote benchmark times exactly this."""
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(phase: str) -> None:
        clock.append(time.perf_counter())
        seconds[phase] = round(clock[-1] - clock[-2], 3)

    identifiable = len(pc.unique(samples.column("teacher"))) >= 3  # one-coin EM needs three teachers
    reliability = teacher_reliability(samples, taxonomy) if acfg.teacher_weights == "em" and identifiable else None
    votes = vote_samples(samples, taxonomy, primary, acfg.confidence_weights, reliability)
    lap("vote")
    cal = _calibration(acfg.calibration, acfg.gold, votes, taxonomy, acfg.confidence_weights)
    if not acfg.calibration:  # a fitted calibrator records what it was fitted for; a reused one is kept as is
        cal.update({"taxonomy_version": taxonomy.version, "confidence_weights": list(acfg.confidence_weights)})
    votes = apply_calibration(votes, cal, taxonomy)
    lap("calibration")
    sft, sft_dropped = sft_examples(votes, documents, taxonomy, acfg.eval_percent, acfg.sft_min_mean_level)
    rl, decisions = rl_rows(votes, documents, taxonomy, acfg.rl_easy_min_confidence, acfg.rl_min_mean_level)
    lap("sft_rl")
    return Aggregated(votes, cal, sft, sft_dropped, rl, decisions, reliability, seconds)


def _heldout_votes(
    run_dir: Path, documents: pa.Table, taxonomy: Taxonomy, primary: str, cal: dict[str, Any], weights: list[float],
    reliability: dict | None,
) -> int | None:  # fmt: skip
    """votes_heldout/ from teacher_samples_heldout/ (scored only), calibrated by this run's calibrator; the
    number of users voted, or None without held-out samples."""
    folder, alone = run_dir / HELDOUT_SAMPLES, run_dir / HELDOUT_VOTES_BY_TEACHER
    for stale in (run_dir / HELDOUT_VOTES, alone):  # an earlier try's held-out votes would be scored as this run's
        shutil.rmtree(stale, ignore_errors=True)
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        return None
    samples = current_samples(pq.read_table(folder), documents, prompt_version(taxonomy))
    if samples.num_rows == 0:
        return 0
    votes = apply_calibration(vote_samples(samples, taxonomy, primary, weights, reliability), cal, taxonomy)
    write_table_atomic(votes, run_dir / HELDOUT_VOTES / "votes.parquet")
    teachers = sorted(set(samples.column("teacher").to_pylist()))
    for teacher in teachers if len(teachers) > 1 else []:  # each teacher alone, for the quality ladder
        own = samples.filter(pc.equal(samples.column("teacher"), teacher))
        write_table_atomic(apply_calibration(vote_samples(own, taxonomy, teacher, weights), cal, taxonomy),
                     alone / f"{teacher}.parquet")  # fmt: skip
    return len(votes.column("user_id").unique())


def apply_calibration(votes: pa.Table, cal: dict[str, Any], taxonomy: Taxonomy) -> pa.Table:
    """Add ``level`` (1..5) and ``confidence`` (0..1) per vote row; null for abstentions."""
    n = votes.num_rows
    level = np.zeros(n, dtype=np.int64)
    confidence = np.full(n, np.nan)
    attribute = votes.column("attribute").to_numpy(zero_copy_only=False)
    raw = votes.column("raw_confidence").to_numpy(zero_copy_only=False)
    for name in taxonomy.attribute_names:
        rows = attribute == name
        level[rows], confidence[rows] = calib.apply(cal, name, raw[rows])
    answered = votes.column("value").to_numpy(zero_copy_only=False) != UNKNOWN
    votes = votes.append_column("level", pa.array(level, mask=~answered, type=pa.int8()))
    return votes.append_column("confidence", pa.array(confidence, mask=~answered))


def _calibration(
    reuse: str | None, gold: str | None, votes: pa.Table, taxonomy: Taxonomy, weights: list[float]
) -> dict[str, Any]:
    if reuse:
        cal = json.loads(Path(reuse).read_text(encoding="utf-8"))
        if cal.get("confidence_weights") not in (None, list(weights)):
            raise ValueError(f"{reuse} was fitted with aggregate.confidence_weights={cal['confidence_weights']}; "
                             f"this run uses {list(weights)}, so raw confidences differ: use the same")  # fmt: skip
        if cal.get("taxonomy_version") != taxonomy.version:
            raise ValueError(f"{reuse} was fitted for taxonomy {cal.get('taxonomy_version')}, this run has "
                             f"{taxonomy.version}; fit a new one (leave aggregate.calibration empty)")  # fmt: skip
        return cal
    answered = votes.filter(pc.not_equal(votes.column("value"), UNKNOWN))
    truth = load_truth(gold, taxonomy, "aggregate.gold") if gold else None
    raw, gold_raw, correct = {}, {}, {}
    for name in taxonomy.attribute_names:
        rows = answered.filter(pc.equal(answered.column("attribute"), name))
        raw[name] = rows.column("raw_confidence").to_numpy(zero_copy_only=False)
        if truth is not None:
            gold_ids, gold_values = pa.array(list(truth[name]), pa.string()), pa.array(list(truth[name].values()))
            gold = gold_values.take(pc.index_in(rows.column("user_id"), value_set=gold_ids))
            keep = pc.is_valid(gold).to_numpy(zero_copy_only=False)  # users of the gold set with a value
            gold_raw[name] = raw[name][keep]
            correct[name] = pc.equal(gold, rows.column("value")).to_numpy(zero_copy_only=False)[keep].astype(float)
    return calib.fit_gold(raw, gold_raw, correct) if truth is not None else calib.fit_label_free(raw)


def _level_counts(votes: pa.Table) -> dict[str, int]:
    levels = votes.column("level").drop_null().to_numpy(zero_copy_only=False)
    return {str(k): int((levels == k).sum()) for k in range(1, 6)}


READS = (DOCUMENTS, TEACHER_SAMPLES)  # teacher_samples_heldout/ too, when label wrote it
WRITES = (VOTES, VOTES_HELDOUT, CALIBRATION, SFT, RL)
run = run_aggregate
