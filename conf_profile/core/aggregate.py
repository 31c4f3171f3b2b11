"""teacher_samples -> votes (long form: one row per user x attribute), then the SFT and RL sets.

Vectorized over the whole table: users and values are encoded to integer indices once, and every attribute
is one call of :func:`conf_profile.core.voting.vote` (no Python loop per user). Besides the weighted vote,
each row keeps the plain majority and the single-sample answer (the primary teacher's sample 0), so the
report can show what confidence weighting adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conf_profile.core.ingest import bucket_of
from conf_profile.core.labeling import MAX_RATIONALE_CHARS, chat_column
from conf_profile.core.reliability import one_coin, vote_weight
from conf_profile.core.student import student_system_prompt, student_target_column
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
        evidence = _take(samples.column(f"{attr.name}_evidence"), _at(positions, strongest(u[positions],
                         row_w[positions], n)), "")  # fmt: skip
        single_value, single_conf = _single(u, v, c, valid & primary, n, unknown)
        token = _token_confidence(samples, attr.name, u, supports, weighted.share, n)
        per_attribute.append((attr.name, names, weighted, majority, evidence, single_value, single_conf, token))
    winners = [(name, pa.array(names).take(pa.array(w.value))) for name, names, w, *_ in per_attribute]
    rationale = _rationales(u, support_score, consistent, samples.column("rationale"), winners, n)
    total = np.bincount(u, minlength=n)
    numeric: dict[str, list[np.ndarray]] = {}
    text: dict[str, list[pa.Array]] = {}
    for (name, names, weighted, majority, evidence, single_value, single_conf, token), (_, value) in zip(
        per_attribute, winners, strict=True
    ):
        strings = {"attribute": pa.repeat(pa.scalar(name), n).cast(pa.string()), "value": value, "evidence": evidence,
                   "majority_value": pa.array(names).take(pa.array(majority.value)),
                   "single_value": pa.array(names).take(pa.array(single_value))}  # fmt: skip
        numbers = {"vote_share": weighted.share, "mean_confidence": weighted.mean_confidence, "samples": total,
                   "valid": weighted.valid, "supporters": weighted.supporters, "entropy": weighted.entropy,
                   "raw_confidence": weighted.raw_confidence, "token_confidence": token,
                   "majority_share": majority.share, "single_confidence": single_conf}  # fmt: skip
        for column, part in strings.items():
            text.setdefault(column, []).append(part)
        for column, part in numbers.items():
            numeric.setdefault(column, []).append(part)
    k = len(per_attribute)
    data: dict[str, Any] = {"user_id": pa.concat_arrays([user_ids] * k),
                            "rationale": pa.concat_arrays([rationale] * k)}  # fmt: skip
    data.update({c: pa.concat_arrays(parts) for c, parts in text.items()})
    # from_pandas: NaN (no supporter, no single answer) becomes null
    data.update({c: pa.array(np.concatenate(parts), from_pandas=True) for c, parts in numeric.items()})
    table = pa.table({c: data[c] for c in VOTE_COLUMNS})
    # Row a * n + user holds (user, attribute a): sorted by user id, then taxonomy order.
    by_user = pc.sort_indices(user_ids).to_numpy(zero_copy_only=False).astype(np.int64)
    return table.take(pa.array((by_user[:, None] + np.arange(k)[None, :] * n).ravel()))


def _at(positions: np.ndarray, best: np.ndarray) -> np.ndarray:
    """positions[best], -1 where best is -1 (no entry)."""
    return np.where(best >= 0, positions[np.maximum(best, 0)] if positions.size else 0, -1)


def _take(column: pa.ChunkedArray | pa.Array, index: np.ndarray, fill: str) -> pa.Array:
    """column[index] as one string array, ``fill`` where the index is -1 or the entry is null."""
    return pc.fill_null(_taken(column, pa.array(index, mask=index < 0)).cast(pa.string()), fill)


def _taken(column: pa.ChunkedArray | pa.Array, index: pa.Array) -> pa.Array:
    """column.take(index) as one array (null where the index is null)."""
    taken = column.take(index)
    return taken.combine_chunks() if isinstance(taken, pa.ChunkedArray) else taken


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


def _single(u: np.ndarray, v: np.ndarray, c: np.ndarray, mask: np.ndarray, n: int, unknown: int):
    """The primary teacher's sample 0 per user: (value index, confidence / 5; NaN where it abstained)."""
    value = np.full(n, unknown, dtype=np.int64)
    conf = np.full(n, np.nan)
    value[u[mask]] = v[mask]
    conf[u[mask]] = c[mask] / 5.0
    conf[value == unknown] = np.nan
    return value, conf


def _rationales(
    u: np.ndarray, score: np.ndarray, consistent: np.ndarray, rationales: pa.ChunkedArray,
    winners: list[tuple[str, pa.Array]], n: int,
) -> pa.Array:  # fmt: skip
    """Per user: the rationale of the strongest sample that names every winning value (so it never argues for
    a value that lost the vote); without such a sample, one composed from the winners."""
    positions = np.flatnonzero(consistent)
    chosen = _take(rationales, _at(positions, strongest(u[positions], score[positions], n)), "")
    return pc.if_else(pc.equal(chosen, ""), composed_rationales(winners), chosen)


def composed_rationales(winners: list[tuple[str, pa.Array]]) -> pa.Array:
    """Per user, a rationale from (attribute, winning values) pairs: the winners the log supports (their
    evidence stands beside each value already), cut at the rationale bound.

    >>> text = composed_rationales([("gender", pa.array(["female", "unknown"])), ("age", pa.array(["old", None]))])
    >>> text.to_pylist()
    ['The log supports gender female, age old.', 'No attribute is supported by the log.']
    """
    n = len(winners[0][1]) if winners else 0
    winners = [(name, pc.fill_null(values, UNKNOWN)) for name, values in winners]
    pieces = [pc.if_else(pc.equal(values, UNKNOWN), "", pc.binary_join_element_wise(f", {name} ", values, ""))
              for name, values in winners]  # fmt: skip
    named = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*pieces, pa.repeat(pa.scalar(""), n), ""), 2)
    text = pc.if_else(pc.equal(named, ""), "No attribute is supported by the log.",
                      pc.binary_join_element_wise("The log supports ", named, ".", ""))  # fmt: skip
    return pc.utf8_slice_codeunits(text, 0, MAX_RATIONALE_CHARS)


def split_of(user_id: str, eval_percent: int) -> str:
    """'eval' for a stable eval_percent share of users (by a hash of the id), 'train' otherwise.

    >>> split_of("u1", 0), split_of("u1", 100)
    ('train', 'eval')
    """
    return "eval" if bucket_of(user_id, 100) < eval_percent else "train"


@dataclass(frozen=True)
class UserVotes:
    """Long-form votes pivoted to one row per user (sorted by id) x one column per taxonomy attribute,
    as row positions into the votes table: every per-user decision below is array arithmetic on it."""

    votes: pa.Table
    user_ids: pa.Array
    rows: np.ndarray  # (users, attributes): the user's vote row for the attribute, -1 where it has none

    @property
    def present(self) -> np.ndarray:
        return self.rows >= 0

    def text(self, column: str, attribute: int) -> pa.Array:
        """One string column for one attribute, per user (null where the user has no row)."""
        index = self.rows[:, attribute]
        return _taken(self.votes.column(column), pa.array(index, mask=index < 0))

    def numbers(self, column: str) -> np.ndarray:
        """(users, attributes) floats of one numeric column; NaN where absent or null."""
        if column not in self.votes.column_names:
            return np.full(self.rows.shape, np.nan)
        values = self.votes.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        return np.where(self.present, values[np.maximum(self.rows, 0)] if values.size else np.nan, np.nan)

    def known(self) -> np.ndarray:
        """(users, attributes): the vote names a value (present and not ``unknown``)."""
        values = self.votes.column("value").to_numpy(zero_copy_only=False)
        return self.present & (values[np.maximum(self.rows, 0)] != UNKNOWN if values.size else False)


def user_votes(votes: pa.Table, taxonomy: Taxonomy) -> UserVotes:
    """Pivot long-form votes (any row order; rows of attributes outside the taxonomy are ignored)."""
    ids = votes.column("user_id").combine_chunks()
    users = pc.unique(ids)
    users = users.take(pc.sort_indices(users))
    u = pc.index_in(ids, value_set=users).to_numpy(zero_copy_only=False)
    a = pc.index_in(votes.column("attribute"), value_set=pa.array(taxonomy.attribute_names, pa.string()))
    ok = pc.is_valid(a).to_numpy(zero_copy_only=False)
    rows = np.full((len(users), len(taxonomy.attribute_names)), -1, dtype=np.int64)
    rows[u[ok], a.to_numpy(zero_copy_only=False)[ok].astype(np.int64)] = np.flatnonzero(ok)
    return UserVotes(votes, users, rows)


def mean_levels(users: UserVotes) -> np.ndarray:
    """Per user, the mean calibrated level over its attributes; an abstention (or a row without a level)
    counts as level 1 (no signal); 0 for a user without rows."""
    level = users.numbers("level")
    level = np.where(users.known() & (level >= 1), level, 1.0)
    count = users.present.sum(axis=1)
    return np.divide(np.where(users.present, level, 0.0).sum(axis=1), count, out=np.zeros(len(count)),
                     where=count > 0)  # fmt: skip


def difficulties(users: UserVotes, easy_min_confidence: float, min_mean_level: float) -> np.ndarray:
    """Per user 'keep', 'easy' (every attribute unanimous at top confidence: no learning signal) or 'noise'
    (mean calibrated level below min_mean_level).

    >>> from conf_profile.core.taxonomy import taxonomy_from_dict
    >>> top = {"user_id": "u", "value": "a", "vote_share": 1.0, "mean_confidence": 5.0, "level": 5}
    >>> votes = pa.Table.from_pylist([{**top, "attribute": "g"}, {**top, "user_id": "v", "attribute": "g",
    ...                                "vote_share": 0.6}])
    >>> tax = taxonomy_from_dict({"name": "t", "attributes": [{"name": "g", "description": "g",
    ...                           "values": [{"name": "a", "definition": "a"}]}]})
    >>> difficulties(user_votes(votes, tax), 5.0, 1.5).tolist()
    ['easy', 'keep']
    """
    share = users.numbers("vote_share")
    confident = np.nan_to_num(users.numbers("mean_confidence")) >= easy_min_confidence
    unanimous = np.all(~users.present | ((share >= 1.0 - 1e-9) & confident), axis=1)
    noise = mean_levels(users) < min_mean_level
    return np.where(unanimous, "easy", np.where(noise, "noise", "keep"))


def sft_examples(
    votes: pa.Table, documents: pa.Table, taxonomy: Taxonomy, eval_percent: int, min_mean_level: float
) -> tuple[pa.Table, int]:
    """Chat examples (system + user document -> student output) and the number of users filtered out:
    below ``min_mean_level``, without a document, or without a single valid teacher judgement (their
    all-unknown target would teach the student to abstain where the teacher failed). ``votes`` must carry
    the calibrated ``level``."""
    users = user_votes(votes, taxonomy)
    level = mean_levels(users)
    doc = pc.index_in(users.user_ids, value_set=documents.column("user_id").combine_chunks())
    judged = (np.nan_to_num(users.numbers("valid")) > 0).any(axis=1)
    keep = (level >= min_mean_level) & pc.is_valid(doc).to_numpy(zero_copy_only=False) & judged
    kept = pa.array(np.flatnonzero(keep))
    judgements = {
        name: (users.text("value", k).take(kept), users.numbers("level")[keep, k], users.text("evidence", k).take(kept))
        for k, name in enumerate(taxonomy.attribute_names)
    }
    # The rationale is the user's own (vote_samples writes one per user): take it from the user's first row.
    first = np.where(users.present, users.rows, np.iinfo(np.int64).max).min(axis=1)[keep]
    rationale = _take(votes.column("rationale"), first, "")
    target = student_target_column(rationale, judgements, taxonomy)
    ids = users.user_ids.take(kept)
    docs = _taken(documents.column("document"), doc.take(kept))
    splits = pa.array([split_of(uid, eval_percent) for uid in ids.to_pylist()], pa.string())  # a crc32 per id
    table = pa.table({
        "user_id": ids,
        "split": splits,
        "messages": chat_column(student_system_prompt(taxonomy), docs, target),
        "mean_level": pa.array(np.round(level[keep], 3)),
    })  # fmt: skip
    return table, int((~keep).sum())


def rl_rows(
    votes: pa.Table, documents: pa.Table, taxonomy: Taxonomy, easy_min_confidence: float, min_mean_level: float
) -> tuple[pa.Table, dict[str, int]]:
    """The RL set (prompt + teacher votes per attribute) and the count of users per difficulty decision."""
    users = user_votes(votes, taxonomy)
    decision = difficulties(users, easy_min_confidence, min_mean_level)
    counts = {d: int((decision == d).sum()) for d in ("keep", "easy", "noise")}
    doc = pc.index_in(users.user_ids, value_set=documents.column("user_id").combine_chunks())
    keep = (decision == "keep") & pc.is_valid(doc).to_numpy(zero_copy_only=False)
    kept = pa.array(np.flatnonzero(keep))
    data: dict[str, pa.Array] = {
        "user_id": users.user_ids.take(kept),
        "prompt": chat_column(student_system_prompt(taxonomy), _taken(documents.column("document"), doc.take(kept))),
    }
    share = users.numbers("vote_share")[keep]
    for k, name in enumerate(taxonomy.attribute_names):
        data[f"{name}_vote"] = users.text("value", k).take(kept).cast(pa.string())
        data[f"{name}_vote_share"] = pa.array(share[:, k], from_pandas=True)
    return pa.table(data), counts
