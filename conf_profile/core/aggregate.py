"""teacher_samples -> votes (long form: one row per user x attribute), then the SFT and RL sets.

Vectorized over the whole table: users and values are encoded to integer indices once, and every attribute
is one call of :func:`conf_profile.core.voting.vote` (no Python loop per user). Besides the weighted vote,
each row keeps the plain majority and the single-sample answer (the primary teacher's sample 0), so the
report can show what confidence weighting adds.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conf_profile.core.labeling import MAX_RATIONALE_CHARS
from conf_profile.core.reliability import one_coin, vote_weight
from conf_profile.core.student import student_messages, student_target
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy
from conf_profile.core.voting import LINEAR_WEIGHTS, UNIFORM_WEIGHTS, strongest, vote

VOTE_COLUMNS = (
    "user_id", "attribute", "value", "vote_share", "mean_confidence", "samples", "valid", "supporters", "entropy",
    "raw_confidence", "token_confidence", "evidence", "rationale", "majority_value", "majority_share",
    "single_value", "single_confidence",
)  # fmt: skip


def current_samples(samples: pa.Table, documents: pa.Table, prompt_version: str) -> pa.Table:
    """The rows that belong to this run: the current prompt version and each user's current document
    (samples of an older document or prompt are left out), one row per (user, teacher, sample)."""
    samples = samples.filter(pc.equal(samples.column("prompt_version"), prompt_version))
    current = pc.binary_join_element_wise(documents.column("user_id"), documents.column("content_hash"), "\x1f")
    document_key = pc.binary_join_element_wise(samples.column("user_id"), samples.column("content_hash"), "\x1f")
    samples = samples.filter(pc.is_in(document_key, value_set=current.combine_chunks()))
    samples = samples.sort_by([("user_id", "ascending"), ("teacher", "ascending"), ("sample", "ascending")])
    key = pc.binary_join_element_wise(samples.column("user_id"), samples.column("teacher"),
                                      pc.cast(samples.column("sample"), pa.string()), "\x1f")  # fmt: skip
    first = np.ones(samples.num_rows, dtype=bool)
    keys = key.to_numpy(zero_copy_only=False)
    first[1:] = keys[1:] != keys[:-1]
    return samples.filter(pa.array(first))


def teacher_reliability(samples: pa.Table, taxonomy: Taxonomy) -> dict[str, dict[str, dict[str, float]]]:
    """Per attribute and teacher, the label-free accuracy (one-coin EM over all teachers' valid judgements,
    core.reliability) and the vote weight it implies; abstentions are not judgements. With fewer than three
    teachers the one-coin model is not identifiable: use fixed weights there."""
    users = pc.dictionary_encode(samples.column("user_id").combine_chunks())
    teachers = pc.dictionary_encode(samples.column("teacher").combine_chunks())
    u = users.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    t = teachers.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = teachers.dictionary.to_pylist()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for attr in taxonomy.attributes:
        known = [v for v in attr.value_names if v != UNKNOWN]
        value = pc.index_in(samples.column(f"{attr.name}_value"), value_set=pa.array(known, pa.string()))
        ok = pc.is_valid(value).to_numpy(zero_copy_only=False)
        v = np.nan_to_num(value.to_numpy(zero_copy_only=False).astype(np.float64)).astype(np.int64)
        accuracy, _ = one_coin(u[ok], t[ok], v[ok], len(users.dictionary), len(names), len(known))
        weight = vote_weight(accuracy, len(known))
        out[attr.name] = {name: {"accuracy": round(float(accuracy[k]), 4), "weight": round(float(weight[k]), 4),
                                 "judgements": int((t[ok] == k).sum())} for k, name in enumerate(names)}  # fmt: skip
    return out


def vote_samples(
    samples: pa.Table,
    taxonomy: Taxonomy,
    primary_teacher: str,
    confidence_weights: Sequence[float] = LINEAR_WEIGHTS,
    reliability: dict[str, dict[str, dict[str, float]]] | None = None,
) -> pa.Table:
    """Long-form votes sorted by user and taxonomy order; ``samples`` has the teacher_samples columns.
    With ``reliability`` (teacher_reliability), a judgement's teacher weight is also multiplied by its
    teacher's estimated vote weight on that attribute (unless every teacher of the attribute has weight 0)."""
    encoded = pc.dictionary_encode(samples.column("user_id").combine_chunks())
    user_ids = encoded.dictionary
    u = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(user_ids)
    fixed = samples.column("teacher_weight").to_numpy(zero_copy_only=False).astype(np.float64)
    teachers = pc.dictionary_encode(samples.column("teacher").combine_chunks())
    teacher, teacher_names = teachers.indices.to_numpy(zero_copy_only=False), teachers.dictionary.to_pylist()
    primary = (pc.equal(samples.column("teacher"), primary_teacher).to_numpy(zero_copy_only=False)
               & (samples.column("sample").to_numpy(zero_copy_only=False) == 0))  # fmt: skip
    support_score = np.zeros(samples.num_rows)  # per sample: weight behind the winning values, for the rationale
    consistent = np.ones(samples.num_rows, dtype=bool)  # per sample: names every winning value
    columns: dict[str, list[Any]] = {c: [] for c in VOTE_COLUMNS if c not in ("user_id", "rationale")}
    per_attribute = []
    for attr in taxonomy.attributes:
        weights = fixed
        estimated = (reliability or {}).get(attr.name)
        if estimated and any(e["weight"] > 0 for e in estimated.values()):
            weights = fixed * np.array([estimated.get(x, {"weight": 0.0})["weight"] for x in teacher_names])[teacher]
        names = attr.value_names
        value = pc.index_in(samples.column(f"{attr.name}_value"), value_set=pa.array(names, pa.string()))
        conf = samples.column(f"{attr.name}_confidence")
        valid = pc.and_(pc.is_valid(value), pc.is_valid(conf)).to_numpy(zero_copy_only=False)
        v = value.to_numpy(zero_copy_only=False)
        v = np.where(valid, np.nan_to_num(v.astype(np.float64)), 0).astype(np.int64)
        c = np.where(valid, np.nan_to_num(conf.to_numpy(zero_copy_only=False).astype(np.float64)), 1).astype(np.int64)
        unknown = names.index(UNKNOWN)
        args = (u[valid], v[valid], c[valid])
        weighted = vote(*args, weights[valid], n, len(names), unknown, confidence_weights)
        majority = vote(*args, np.ones(int(valid.sum())), n, len(names), unknown, UNIFORM_WEIGHTS)
        # Evidence: the supporter with the most weight; its weight also scores its sample for the rationale.
        row_w = weights * np.asarray(confidence_weights, dtype=np.float64)[c - 1]
        supports = valid & (v == weighted.value[u]) & (weighted.value[u] != unknown)
        support_score += np.where(supports, row_w, 0.0)
        consistent &= supports | (weighted.value[u] == unknown)
        positions = np.flatnonzero(supports)
        best = strongest(u[positions], row_w[positions], n)
        evidence_col = samples.column(f"{attr.name}_evidence").to_pylist()
        evidence = [evidence_col[positions[b]] or "" if b >= 0 else "" for b in best]
        single_value, single_conf = _single(u, v, c, valid & primary, n, names)
        token = _token_confidence(samples, attr.name, u, supports, weighted.share, n)
        per_attribute.append((attr.name, names, weighted, majority, evidence, single_value, single_conf, token))
    rationale = _rationales(u, support_score, consistent, samples.column("rationale").to_pylist(), per_attribute, n)
    total = np.bincount(u, minlength=n)
    for name, names, weighted, majority, evidence, single_value, single_conf, token in per_attribute:
        columns["attribute"].append(np.full(n, name, dtype=object))
        columns["value"].append(np.array(names, dtype=object)[weighted.value])
        columns["vote_share"].append(weighted.share)
        columns["mean_confidence"].append(weighted.mean_confidence)
        columns["samples"].append(total)
        columns["valid"].append(weighted.valid)
        columns["supporters"].append(weighted.supporters)
        columns["entropy"].append(weighted.entropy)
        columns["raw_confidence"].append(weighted.raw_confidence)
        columns["token_confidence"].append(token)
        columns["evidence"].append(np.array(evidence, dtype=object))
        columns["majority_value"].append(np.array(names, dtype=object)[majority.value])
        columns["majority_share"].append(majority.share)
        columns["single_value"].append(single_value)
        columns["single_confidence"].append(single_conf)
    k = len(per_attribute)
    data: dict[str, Any] = {"user_id": pa.concat_arrays([user_ids] * k), "rationale": pa.array(rationale * k)}
    # from_pandas: NaN (no supporter, no single answer) becomes null
    data.update({c: pa.array(np.concatenate(parts), from_pandas=True) for c, parts in columns.items()})
    table = pa.table({c: data[c] for c in VOTE_COLUMNS})
    order = {name: i for i, name in enumerate(taxonomy.attribute_names)}
    rank = pa.array([order[a] for a in table.column("attribute").to_pylist()], pa.int32())
    return (
        table.append_column("_rank", rank).sort_by([("user_id", "ascending"), ("_rank", "ascending")]).drop(["_rank"])
    )


def _token_confidence(
    samples: pa.Table, attribute: str, u: np.ndarray, supports: np.ndarray, share: np.ndarray, n: int
) -> np.ndarray:
    """Vote share x mean token probability of the supporters' written value (NaN where no supporter has
    one, e.g. samples from an engine without log-probs): the raw confidence with the engine's probability
    in place of the stated level."""
    column = f"{attribute}_token_prob"
    if column not in samples.column_names:
        return np.full(n, np.nan)
    prob = samples.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
    has = supports & ~np.isnan(prob)
    total = np.bincount(u[has], weights=prob[has], minlength=n)
    count = np.bincount(u[has], minlength=n)
    return np.divide(share * total, count, out=np.full(n, np.nan), where=count > 0)


def _single(u: np.ndarray, v: np.ndarray, c: np.ndarray, mask: np.ndarray, n: int, names: tuple[str, ...]):
    value = np.full(n, UNKNOWN, dtype=object)
    conf = np.full(n, np.nan)
    value[u[mask]] = np.array(names, dtype=object)[v[mask]]
    conf[u[mask]] = c[mask] / 5.0
    conf[value == UNKNOWN] = np.nan
    return value, conf


def _rationales(
    u: np.ndarray, score: np.ndarray, consistent: np.ndarray, rationales: list[str | None], per_attribute: list,
    n: int,
) -> list[str]:  # fmt: skip
    """Per user: the rationale of the strongest sample that names every winning value (so it never argues for
    a value that lost the vote); without such a sample, one composed from the winners' evidence."""
    positions = np.flatnonzero(consistent)
    best = strongest(u[positions], score[positions], n)
    out = []
    for user, b in enumerate(best.tolist()):
        text = (rationales[positions[b]] or "") if b >= 0 else ""
        out.append(text or composed_rationale([(a[0], a[1][a[2].value[user]], a[4][user]) for a in per_attribute]))
    return out


def composed_rationale(winners: list[tuple[str, str, str]]) -> str:
    """A rationale from (attribute, winning value, evidence) triples: the winners the log supports (their
    evidence stands beside each value already), cut at the rationale bound.

    >>> composed_rationale([("gender", "female", "stroller search"), ("age_group", "unknown", "")])
    'The log supports gender female.'
    """
    parts = [f"{name} {value}" for name, value, _ in winners if value != UNKNOWN]
    text = "The log supports " + ", ".join(parts) + "." if parts else "No attribute is supported by the log."
    return text[:MAX_RATIONALE_CHARS]


def split_of(user_id: str, eval_percent: int) -> str:
    """'eval' for a stable eval_percent share of users (by a hash of the id), 'train' otherwise.

    >>> split_of("u1", 0), split_of("u1", 100)
    ('train', 'eval')
    """
    return "eval" if zlib.crc32(user_id.encode("utf-8")) % 100 < eval_percent else "train"


def per_user(votes: pa.Table, taxonomy: Taxonomy) -> dict[str, dict[str, dict[str, Any]]]:
    """user_id -> attribute -> that attribute's vote row (as a dict)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in votes.to_pylist():
        out.setdefault(row["user_id"], {})[row["attribute"]] = row
    return out


def mean_level(rows: dict[str, dict[str, Any]]) -> float:
    """Mean calibrated level over attributes; an abstention counts as level 1 (no signal)."""
    levels = [r["level"] if r["value"] != UNKNOWN and r.get("level") else 1 for r in rows.values()]
    return float(np.mean(levels)) if levels else 0.0


def sft_examples(
    votes: pa.Table, documents: pa.Table, taxonomy: Taxonomy, eval_percent: int, min_mean_level: float
) -> tuple[pa.Table, int]:
    """Chat examples (system + user document -> student output) and the number of users filtered out:
    below ``min_mean_level``, without a document, or without a single valid teacher judgement (their
    all-unknown target would teach the student to abstain where the teacher failed). ``votes`` must carry
    the calibrated ``level``."""
    users = per_user(votes, taxonomy)
    docs = dict(zip(documents.column("user_id").to_pylist(), documents.column("document").to_pylist(), strict=True))
    rows, dropped = [], 0
    for uid in sorted(users):
        attrs = users[uid]
        level = mean_level(attrs)
        if level < min_mean_level or uid not in docs or all(r["valid"] == 0 for r in attrs.values()):
            dropped += 1
            continue
        judgements = {a: (r["value"], r["level"] or 1, r["evidence"] or "") for a, r in attrs.items()}
        rationale = next(iter(attrs.values()))["rationale"] or ""
        messages = [*student_messages(taxonomy, docs[uid]),
                    {"role": "assistant", "content": student_target(rationale, judgements, taxonomy)}]  # fmt: skip
        rows.append(
            {
                "user_id": uid,
                "split": split_of(uid, eval_percent),
                "messages": messages,
                "mean_level": round(level, 3),
            }
        )
    schema = pa.schema([("user_id", pa.string()), ("split", pa.string()),
                        ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
                        ("mean_level", pa.float64())])  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema), dropped


def difficulty(rows: dict[str, dict[str, Any]], easy_min_confidence: float, min_mean_level: float) -> str:
    """'keep', 'easy' (every attribute unanimous at top confidence: no learning signal) or 'noise' (mean
    calibrated level below min_mean_level).

    >>> top = {"value": "a", "vote_share": 1.0, "mean_confidence": 5.0, "level": 5}
    >>> difficulty({"g": top}, 5.0, 1.5), difficulty({"g": {**top, "vote_share": 0.6}}, 5.0, 1.5)
    ('easy', 'keep')
    """
    unanimous = all(r["vote_share"] >= 1.0 - 1e-9 and (r["mean_confidence"] or 0) >= easy_min_confidence
                    for r in rows.values())  # fmt: skip
    if unanimous:
        return "easy"
    if mean_level(rows) < min_mean_level:
        return "noise"
    return "keep"


def rl_rows(
    votes: pa.Table, documents: pa.Table, taxonomy: Taxonomy, easy_min_confidence: float, min_mean_level: float
) -> tuple[pa.Table, dict[str, int]]:
    """The RL set (prompt + teacher votes per attribute) and the count of users per difficulty decision."""
    docs = dict(zip(documents.column("user_id").to_pylist(), documents.column("document").to_pylist(), strict=True))
    counts = {"keep": 0, "easy": 0, "noise": 0}
    rows = []
    for uid, attrs in sorted(per_user(votes, taxonomy).items()):
        decision = difficulty(attrs, easy_min_confidence, min_mean_level)
        counts[decision] += 1
        if decision != "keep" or uid not in docs:
            continue
        row: dict[str, Any] = {"user_id": uid, "prompt": student_messages(taxonomy, docs[uid])}
        for a, r in attrs.items():
            row[f"{a}_vote"], row[f"{a}_vote_share"] = r["value"], float(r["vote_share"])
        rows.append(row)
    fields = [
        ("user_id", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ]
    for a in taxonomy.attribute_names:
        fields += [(f"{a}_vote", pa.string()), (f"{a}_vote_share", pa.float64())]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields)), counts
