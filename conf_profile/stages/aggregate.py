"""Aggregate: teacher_samples/ -> votes/, calibration.json, sft/, rl/ (the logic is in conf_profile.core).

One process with pyarrow and numpy, by hash buckets of users, so that its memory is one bucket plus 8 bytes
per answered vote for the calibration fit: the samples and the documents are streamed into
``aggregate.buckets`` buckets (storage.partition_by_user, which holds at most about 128 MiB of rows at a
time; core.ingest.bucket_of; by default one bucket per ``aggregate.bucket_mb`` of teacher_samples/ and
documents/), then
- pass 1 votes each bucket (vectorized over its users: core.aggregate) and keeps only the raw confidences
  the calibration fit needs (8 bytes per vote);
- the calibrator is fitted once on all of them (or reused);
- pass 2 calibrates each bucket's votes and builds its SFT and RL rows, appended to votes/votes.parquet,
  sft/train.parquet, sft/eval.parquet and rl/train.parquet (each written next to its target and renamed
  when the last bucket is in: readers see the old tables or the new ones).
Every user's rows are in one bucket, and every computation but the calibration fit (and the teachers'
reliability, over a compact read of the values alone) is per user, so the tables are the ones the whole
table would give (tests/test_aggregate.py checks it). No Ray cluster is needed for this stage.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile import fs
from conf_profile.core import calibration as calib
from conf_profile.core.aggregate import current_samples, rl_rows, sft_examples, teacher_reliability, vote_samples
from conf_profile.core.labeling import prompt_version
from conf_profile.core.metrics import load_truth
from conf_profile.core.settings import AggregateConfig, Config
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy, load_taxonomy
from conf_profile.fs import Loc, location
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
    TableWriter,
    bucket_folder,
    check_reads,
    parquet_files,
    partition_by_user,
    write_table_atomic,
    write_text_atomic,
)


def run_aggregate(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    """Bucket by bucket (see the module docstring): the memory is one bucket's samples and documents plus
    a few numbers per vote for the calibration fit, whatever the number of users."""
    started = time.monotonic()
    acfg = cfg.aggregate
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    check_reads("aggregate", READS, run_dir)
    version, primary = prompt_version(taxonomy), cfg.label.teachers[0].name
    # the buckets: this process's own scratch (beside the tables on a local disk, a local temp folder when
    # the run directory is on an object store)
    staging = run_dir / "_staging" / "aggregate" if isinstance(run_dir, Path) else Path(mkdtemp(prefix="aggregate-"))
    sample_files, doc_files = parquet_files(TEACHER_SAMPLES.path(run_dir)), parquet_files(DOCUMENTS.path(run_dir))
    size = sum(f.stat().st_size for f in (*sample_files, *doc_files))
    buckets = acfg.buckets or max(1, math.ceil(size / (acfg.bucket_mb * 2**20)))
    partition_by_user(sample_files, None, buckets, staging / "samples")
    users_documents = sum(partition_by_user(doc_files, ["user_id", "document", "content_hash"], buckets,
                                            staging / "documents"))  # one row per user  # fmt: skip

    def documents(b: int) -> pa.Table:
        """Bucket b's documents: those of every user whose samples are in bucket b."""
        path = bucket_folder(staging / "documents", b)
        return pq.read_table(path) if path.exists() else _EMPTY_DOCUMENTS

    reliability = _reliability(acfg, staging / "samples", documents, buckets, version, taxonomy)
    truth = load_truth(acfg.gold, taxonomy, "aggregate.gold") if acfg.gold and not acfg.calibration else None
    fit_data: dict[str, list[list[np.ndarray]]] = {a: [[], [], []] for a in taxonomy.attribute_names}
    samples_used = 0
    for b in range(buckets):  # pass 1: vote each bucket; keep what the calibration fit needs
        path = bucket_folder(staging / "samples", b)
        samples = current_samples(pq.read_table(path), documents(b), version) if path.exists() else None
        if samples is None or samples.num_rows == 0:
            continue
        samples_used += samples.num_rows
        votes = vote_samples(samples, taxonomy, primary, acfg.confidence_weights, reliability)
        write_table_atomic(votes, staging / "votes" / f"bucket-{b:05d}.parquet")
        for name, parts in _calibration_data(votes, truth, taxonomy).items():
            for kept, part in zip(fit_data[name], parts, strict=True):
                kept.append(part)
        pa.default_memory_pool().release_unused()
    if samples_used == 0:
        raise FileNotFoundError(f"{run_dir / 'teacher_samples'} has no samples for the current documents and prompt")
    collected = {}
    for name in taxonomy.attribute_names:  # each attribute's pieces freed as soon as they are joined
        collected[name] = [np.concatenate(p) for p in fit_data.pop(name)]
    cal = _calibration(acfg.calibration, truth, collected, taxonomy, acfg.confidence_weights)
    if not acfg.calibration:  # a fitted calibrator records what it was fitted for; a reused one is kept as is
        cal.update({"taxonomy_version": taxonomy.version, "confidence_weights": list(acfg.confidence_weights)})
    outputs = {"votes": VOTES.path(run_dir) / "votes.parquet", "train": SFT.path(run_dir) / "train.parquet",
               "eval": SFT.path(run_dir) / "eval.parquet", "rl": RL.path(run_dir) / "train.parquet"}  # fmt: skip
    writers = {name: TableWriter(path) for name, path in outputs.items()}
    totals = {"users": 0, "unknown": 0, "votes": 0, "sft_dropped": 0}
    level_counts = dict.fromkeys(range(1, 6), 0)
    decisions: dict[str, int] = {}
    try:
        for b in range(buckets):  # pass 2: calibrate each bucket's votes, build its SFT and RL rows
            path = staging / "votes" / f"bucket-{b:05d}.parquet"
            if not path.exists():
                continue
            votes = apply_calibration(pq.read_table(path), cal, taxonomy)
            docs = documents(b)  # the samples are not read again: the votes carry what pass 2 needs
            sft, dropped = sft_examples(votes, docs, taxonomy, acfg.eval_percent, acfg.sft_min_mean_level)
            rl, counts = rl_rows(votes, docs, taxonomy, acfg.rl_easy_min_confidence, acfg.rl_min_mean_level)
            writers["votes"].write(votes)
            for split in ("train", "eval"):
                writers[split].write(sft.filter(pc.equal(sft.column("split"), split)))
            writers["rl"].write(rl)
            totals["users"] += len(votes.column("user_id").unique())
            totals["votes"] += votes.num_rows
            totals["unknown"] += int(pc.sum(pc.equal(votes.column("value"), UNKNOWN)).as_py() or 0)
            totals["sft_dropped"] += dropped
            for k, v in _level_counts(votes).items():
                level_counts[int(k)] += v
            for k, v in counts.items():
                decisions[k] = decisions.get(k, 0) + v
            pa.default_memory_pool().release_unused()
        for writer in writers.values():
            writer.commit()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    heldout = _heldout_votes(run_dir, taxonomy, primary, cal, acfg.confidence_weights, reliability)
    write_text_atomic(run_dir / "calibration.json", json.dumps(cal, indent=2, allow_nan=False))
    fs.remove(staging)
    entry = {
        "users_documents": users_documents,
        "users_voted": totals["users"],
        "users_unlabeled": users_documents - totals["users"],  # e.g. beyond label.max_users: the student profiles them
        "samples_used": samples_used,
        "abstain_share": round(totals["unknown"] / max(1, totals["votes"]), 4),
        "calibration": cal["method"] if not acfg.calibration else f"reused {acfg.calibration}",
        "level_counts": {str(k): v for k, v in level_counts.items()},
        "sft_train": writers["train"].rows,
        "sft_eval": writers["eval"].rows,
        "sft_filtered": totals["sft_dropped"],
        "rl_users": writers["rl"].rows,
        "rl_difficulty": decisions,
        "buckets": buckets,
        "memory_pool": pa.default_memory_pool().backend_name,  # jemalloc unless pyarrow was loaded first
        "seconds": round(time.monotonic() - started, 1),
    }
    if heldout is not None:
        entry["heldout_users_voted"] = heldout
    if reliability is not None:  # fitted on the training users' samples; the held-out votes use the same
        entry["teacher_reliability"] = reliability
    return entry


_EMPTY_DOCUMENTS = pa.schema([("user_id", pa.string()), ("document", pa.string()), ("content_hash", pa.string())]
                             ).empty_table()  # fmt: skip


def _reliability(
    acfg: AggregateConfig, samples: Path, documents: Callable[[int], pa.Table], buckets: int, version: str,
    taxonomy: Taxonomy,
) -> dict[str, Any] | None:  # fmt: skip
    """teacher_reliability over every bucket's current samples (only the columns it needs: the values of
    each user's judgements), when aggregate.teacher_weights is em and three or more teachers judged."""
    if acfg.teacher_weights != "em":
        return None
    columns = ["user_id", "teacher", "sample", "prompt_version", "content_hash",
               *(f"{a}_value" for a in taxonomy.attribute_names)]  # fmt: skip
    files = [(b, bucket_folder(samples, b)) for b in range(buckets)]
    parts = [current_samples(pq.read_table(f, columns=columns), documents(b), version) for b, f in files if f.exists()]
    if not parts:
        return None
    compact = pa.concat_tables(parts)
    if len(pc.unique(compact.column("teacher"))) < 3:  # one-coin EM needs three teachers
        return None
    return teacher_reliability(compact, taxonomy)


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
    truth = load_truth(acfg.gold, taxonomy, "aggregate.gold") if acfg.gold and not acfg.calibration else None
    cal = _calibration(acfg.calibration, truth, _calibration_data(votes, truth, taxonomy), taxonomy,
                       acfg.confidence_weights)  # fmt: skip
    if not acfg.calibration:  # a fitted calibrator records what it was fitted for; a reused one is kept as is
        cal.update({"taxonomy_version": taxonomy.version, "confidence_weights": list(acfg.confidence_weights)})
    votes = apply_calibration(votes, cal, taxonomy)
    lap("calibration")
    sft, sft_dropped = sft_examples(votes, documents, taxonomy, acfg.eval_percent, acfg.sft_min_mean_level)
    rl, decisions = rl_rows(votes, documents, taxonomy, acfg.rl_easy_min_confidence, acfg.rl_min_mean_level)
    lap("sft_rl")
    return Aggregated(votes, cal, sft, sft_dropped, rl, decisions, reliability, seconds)


def _heldout_votes(
    run_dir: Loc, taxonomy: Taxonomy, primary: str, cal: dict[str, Any], weights: list[float],
    reliability: dict | None,
) -> int | None:  # fmt: skip
    """votes_heldout/ from teacher_samples_heldout/ (scored only), calibrated by this run's calibrator; the
    number of users voted, or None without held-out samples."""
    folder, alone = run_dir / HELDOUT_SAMPLES, run_dir / HELDOUT_VOTES_BY_TEACHER
    for stale in (run_dir / HELDOUT_VOTES, alone):  # an earlier try's held-out votes would be scored as this run's
        fs.remove(stale)
    if not folder.is_dir() or not any(folder.rglob("*.parquet")):
        return None
    samples = fs.read_table(folder)
    users = pc.unique(samples.column("user_id")).to_pylist()  # only these users' document keys are read
    documents = fs.read_table(DOCUMENTS.path(run_dir), columns=["user_id", "content_hash"],
                              filters=[("user_id", "in", users)])  # fmt: skip
    samples = current_samples(samples, documents, prompt_version(taxonomy))
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


def _calibration_data(
    votes: pa.Table, truth: dict[str, dict[str, str | None]] | None, taxonomy: Taxonomy
) -> dict[str, list[np.ndarray]]:
    """Per attribute, what the calibration fit needs of these votes: [the raw confidences of the answered
    votes, those of the answered votes of gold users, whether each of those is right (1/0)]."""
    answered = votes.filter(pc.not_equal(votes.column("value"), UNKNOWN))
    out = {}
    for name in taxonomy.attribute_names:
        rows = answered.filter(pc.equal(answered.column("attribute"), name))
        raw = rows.column("raw_confidence").to_numpy(zero_copy_only=False).astype(np.float64)
        gold_raw, correct = np.zeros(0), np.zeros(0)
        if truth is not None:
            gold_ids, gold_values = pa.array(list(truth[name]), pa.string()), pa.array(list(truth[name].values()))
            gold = gold_values.take(pc.index_in(rows.column("user_id"), value_set=gold_ids))
            keep = pc.is_valid(gold).to_numpy(zero_copy_only=False)  # users of the gold set with a value
            gold_raw = raw[keep]
            correct = pc.equal(gold, rows.column("value")).to_numpy(zero_copy_only=False)[keep].astype(float)
        out[name] = [raw, gold_raw, correct]
    return out


def _calibration(
    reuse: str | None, truth: dict[str, dict[str, str | None]] | None, data: dict[str, list[np.ndarray]],
    taxonomy: Taxonomy, weights: list[float],
) -> dict[str, Any]:  # fmt: skip
    """The calibrator: ``reuse``'s (checked against this run), else fitted on ``data`` (_calibration_data of
    all votes): isotonic on the gold users' correctness with ``truth``, label-free without."""
    if reuse:
        cal = json.loads(location(reuse).read_text(encoding="utf-8"))
        if cal.get("confidence_weights") not in (None, list(weights)):
            raise ValueError(f"{reuse} was fitted with aggregate.confidence_weights={cal['confidence_weights']}; "
                             f"this run uses {list(weights)}, so raw confidences differ: use the same")  # fmt: skip
        if cal.get("taxonomy_version") != taxonomy.version:
            raise ValueError(f"{reuse} was fitted for taxonomy {cal.get('taxonomy_version')}, this run has "
                             f"{taxonomy.version}; fit a new one (leave aggregate.calibration empty)")  # fmt: skip
        return cal
    # In a fixed order (sorted), so that the fit's sums do not depend on how the users were bucketed.
    raw = {}
    for name, parts in data.items():
        parts[0].sort()  # in place: at a million users these are the largest arrays the stage holds
        raw[name] = parts[0]
    if truth is None:
        return calib.fit_label_free(raw)
    order = {name: np.lexsort((parts[2], parts[1])) for name, parts in data.items()}
    gold_raw = {name: parts[1][order[name]] for name, parts in data.items()}
    return calib.fit_gold(raw, gold_raw, {name: parts[2][order[name]] for name, parts in data.items()})


def _level_counts(votes: pa.Table) -> dict[str, int]:
    levels = votes.column("level").drop_null().to_numpy(zero_copy_only=False)
    return {str(k): int((levels == k).sum()) for k in range(1, 6)}


READS = (DOCUMENTS, TEACHER_SAMPLES)  # teacher_samples_heldout/ too, when label wrote it
WRITES = (VOTES, VOTES_HELDOUT, CALIBRATION, SFT, RL)
run = run_aggregate
