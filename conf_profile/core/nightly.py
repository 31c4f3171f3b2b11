"""The nightly refresh's decisions: which users changed, which dates may run, and whether a partition may be
published (quality gates).

Changed users: a night profiles the users whose document differs from the one their published profile was
made from (content hash), or whose profile was made by another model, and the users without a published
profile. The published state a night compares with is that of the last night before its date, so a
re-run of a date selects the same users again. A late event (stamped before the last night's newest event,
but in a file that arrived since) changes its user's document, so that user is profiled again.

Watermark: the state file holds the newest event time of the last published night, the date it was
published for and the watermark that night started from (for the record). Re-running the last published
date is allowed (its partition is replaced); a date before the last published one is refused.

Quality gates: a partition is published only when its profiles pass.

Stats of a partition: users, parse-failure rate (share of users whose output did not parse), abstain rate
(share of attribute cells left ``unknown`` among parsed users) and, per attribute, the distribution of
values (``unknown`` included). Drift between two partitions is the total variation distance of those
distributions (half the L1 distance: 0 = identical, 1 = disjoint), the largest over attributes; it is
checked only when both partitions have at least ``min_users_for_drift`` users, because small partitions
move by chance.

>>> cur = {"users": 4, "parse_failure_rate": 0.25, "abstain_rate": 0.5, "distribution": {"g": {"m": 1.0}}}
>>> prev = {"users": 4, "parse_failure_rate": 0.0, "abstain_rate": 0.5, "distribution": {"g": {"f": 1.0}}}
>>> check_gates(cur, prev, max_parse_failure_rate=0.1, max_abstain_rate=0.9, max_drift=0.3, min_users_for_drift=1)
['parse-failure rate 0.250 > 0.100', 'label drift 1.000 > 0.300 (attribute g)']
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conf_profile.core.config import to_dict
from conf_profile.core.taxonomy import UNKNOWN

STATE_COLUMNS = ("user_id", "content_hash", "model")  # the published state: what each user's profile was made from
# input_files: a file is known by its path, size and modification time; one that changes is read again.
INPUT_FILES_SCHEMA = pa.schema([("path", pa.string()), ("bytes", pa.int64()), ("mtime_ns", pa.int64())])


def changed_mask(documents: pa.Table, published: pa.Table | None, model: str) -> pa.Array:
    """Which rows of ``documents`` (user_id, content_hash) to profile tonight: users absent from ``published``
    (STATE_COLUMNS), or whose content hash or model differs from the published one.

    >>> docs = pa.table({"user_id": ["a", "b", "c", "d"], "content_hash": ["1", "2", "3", "4"]})
    >>> state = pa.table({"user_id": ["a", "b", "c"], "content_hash": ["1", "x", "3"], "model": ["m", "m", "old"]})
    >>> changed_mask(docs, state, "m").to_pylist()  # b: new document, c: new model, d: new user
    [False, True, True, True]
    """
    if published is None or published.num_rows == 0:
        return pa.array([True] * documents.num_rows, pa.bool_())
    index = pc.index_in(documents.column("user_id"), value_set=published.column("user_id"))
    same_hash = pc.equal(documents.column("content_hash"), published.column("content_hash").take(index))
    same_model = pc.equal(published.column("model").take(index), pa.scalar(model, pa.string()))
    unchanged = pc.fill_null(pc.and_(same_hash, same_model), False)  # a null index (new user) is a change
    return pc.invert(unchanged)


def next_state(previous: pa.Table | None, tonight: pa.Table) -> pa.Table:
    """The published state after a night, sorted by user: tonight's rows whose output parsed (``error`` null)
    replace their users' entries; a user whose output did not parse keeps the previous entry (or none), so
    the next night tries that user again.

    >>> prev = pa.table({"user_id": ["a", "b"], "content_hash": ["1", "2"], "model": ["m", "m"]})
    >>> night = pa.table({"user_id": ["b", "c", "d"], "content_hash": ["2b", "3", "4"], "model": ["m"] * 3,
    ...                   "error": [None, None, "not_json"]})
    >>> next_state(prev, night).to_pydict()
    {'user_id': ['a', 'b', 'c'], 'content_hash': ['1', '2b', '3'], 'model': ['m', 'm', 'm']}
    """
    parsed = tonight.filter(pc.is_null(tonight.column("error"))).select(list(STATE_COLUMNS))
    if previous is None:
        return parsed.sort_by("user_id")
    kept = previous.filter(pc.invert(pc.is_in(previous.column("user_id"), value_set=parsed.column("user_id"))))
    return pa.concat_tables([kept.select(list(STATE_COLUMNS)).cast(parsed.schema), parsed]).sort_by("user_id")


def partition_stats(rows: list[dict[str, Any]], attributes: tuple[str, ...]) -> dict[str, Any]:
    """Stats of profile rows (the wide form: ``error`` and one column per attribute).

    >>> partition_stats([{"error": None, "g": "m"}, {"error": None, "g": "unknown"}, {"error": "x", "g": "unknown"}],
    ...                 ("g",))
    {'users': 3, 'parse_failure_rate': 0.3333, 'abstain_rate': 0.5, 'distribution': {'g': {'m': 0.5, 'unknown': 0.5}}}
    """
    parsed = [r for r in rows if r.get("error") is None]
    cells = len(parsed) * len(attributes)
    abstained = sum(1 for r in parsed for a in attributes if r.get(a) == UNKNOWN)
    distribution = {}
    for a in attributes:
        counts = Counter(r.get(a) for r in parsed)
        distribution[a] = {v: round(c / len(parsed), 4) for v, c in sorted(counts.items())} if parsed else {}
    return {
        "users": len(rows),
        "parse_failure_rate": round((len(rows) - len(parsed)) / len(rows), 4) if rows else 0.0,
        "abstain_rate": round(abstained / cells, 4) if cells else 0.0,
        "distribution": distribution,
    }


def drift(current: dict[str, dict[str, float]], previous: dict[str, dict[str, float]]) -> tuple[float, str | None]:
    """(largest total variation distance over the attributes both have, that attribute).

    >>> drift({"g": {"m": 0.5, "f": 0.5}}, {"g": {"m": 1.0}})
    (0.5, 'g')
    """
    worst, where = 0.0, None
    for a in sorted(set(current) & set(previous)):
        p, q = current[a], previous[a]
        if not p or not q:
            continue
        tv = round(sum(abs(p.get(v, 0.0) - q.get(v, 0.0)) for v in set(p) | set(q)) / 2, 4)
        if tv > worst:
            worst, where = tv, a
    return worst, where


def check_gates(
    current: dict[str, Any],
    previous: dict[str, Any] | None,
    max_parse_failure_rate: float,
    max_abstain_rate: float,
    max_drift: float,
    min_users_for_drift: int,
) -> list[str]:
    """The failed gates, each as a short reason (empty: publish). A partition without users passes."""
    failures: list[str] = []
    if current["users"] == 0:
        return failures
    if current["parse_failure_rate"] > max_parse_failure_rate:
        failures.append(f"parse-failure rate {current['parse_failure_rate']:.3f} > {max_parse_failure_rate:.3f}")
    if current["abstain_rate"] > max_abstain_rate:
        failures.append(f"abstain rate {current['abstain_rate']:.3f} > {max_abstain_rate:.3f}")
    if previous and min(current["users"], previous["users"]) >= min_users_for_drift:
        tv, attribute = drift(current["distribution"], previous["distribution"])
        if tv > max_drift:
            failures.append(f"label drift {tv:.3f} > {max_drift:.3f} (attribute {attribute})")
    return failures


class WatermarkError(ValueError):
    """The date cannot run against this watermark state (the message names the fix)."""


def watermark_since(state: dict[str, Any] | None, date: str) -> str | None:
    """The event time (ISO string) after which activity counts as new for ``date``; None = everything.

    >>> state = {"date": "2026-11-02", "last_event_time": "2026-11-02T23:00", "since": "2026-11-01T22:00"}
    >>> watermark_since(None, "2026-11-01") is None
    True
    >>> watermark_since(state, "2026-11-03"), watermark_since(state, "2026-11-02")
    ('2026-11-02T23:00', '2026-11-01T22:00')
    """
    if not state:
        return None
    if date > state["date"]:
        return state["last_event_time"]
    if date == state["date"]:
        return state.get("since")
    raise WatermarkError(
        f"--date {date} is before the last published date {state['date']}: the watermark has moved past it "
        "(re-run the last date, or a later one; a backfill needs its own --out)"
    )


def file_listing(log_input: Any) -> pa.Table:
    """The input files as the store records them (INPUT_FILES_SCHEMA); an unreadable file is listed with
    bytes -1, so it is reported once, and read when it is replaced by a readable one."""
    rows = [(p, b, m) for p, b, m in zip(log_input.paths, log_input.sizes, log_input.mtimes_ns, strict=True)]
    rows += [(p, -1, 0) for p, _ in log_input.unreadable]
    return pa.Table.from_pylist([dict(zip(INPUT_FILES_SCHEMA.names, r, strict=True)) for r in sorted(rows)],
                                schema=INPUT_FILES_SCHEMA)  # fmt: skip


def new_files(listed: pa.Table, seen: pa.Table) -> pa.Table:
    """The rows of ``listed`` not in ``seen`` (path, size and modification time all equal: a rewritten file
    is new again)."""

    columns = INPUT_FILES_SCHEMA.names
    return listed.filter(pc.invert(pc.is_in(row_keys(listed, columns), value_set=row_keys(seen, columns))))


def row_keys(table: pa.Table, columns: list[str]) -> pa.Array:
    """One string per row joining ``columns`` (as strings, NUL-separated), to match rows on several columns
    with one is_in; a null in any column gives a null key, equal to no other.

    >>> row_keys(pa.table({"u": ["a", "b"], "n": [1, None]}), ["u", "n"]).to_pylist()
    ['a\\x001', None]
    """
    parts = [pc.cast(table.column(c), pa.string()) for c in columns]
    return pc.binary_join_element_wise(*parts, "\x00").combine_chunks()


def ingest_settings_hash(ingest: Any) -> str:
    """A hash of the ingest settings that shape the documents (limits, budgets, mapping; not the ones that
    only size the work): documents built under other settings are rebuilt from every input file."""
    sizing = {"buckets", "bucket_mb", "block_mb", "split_mb", "batch_rows", "cpus_per_task"}
    shaping = {k: v for k, v in to_dict(ingest).items() if k not in sizing}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True, default=str).encode()).hexdigest()[:16]


def full_read_reason(incremental: bool, last_night: dict[str, Any] | None, model: str, ingest_hash: str) -> str:
    """Why tonight reads every input file instead of those that arrived since the last night ('' = it
    does not): no night before, nightly.incremental off, another model than the last night's (every user
    is profiled again), or other document-shaping ingest settings than the last night's.

    >>> last = {"model": "m", "ingest_hash": "h"}
    >>> full_read_reason(True, last, "m", "h"), full_read_reason(True, last, "m2", "h")
    ('', 'the model changed')
    >>> full_read_reason(True, None, "m", "h"), full_read_reason(False, last, "m", "h")
    ('no night before this date', 'nightly.incremental is off')
    """
    if last_night is None:
        return "no night before this date"
    if not incremental:
        return "nightly.incremental is off"
    if last_night.get("model") != model:
        return "the model changed"
    if last_night.get("ingest_hash") != ingest_hash:
        return "the ingest settings changed"
    return ""
