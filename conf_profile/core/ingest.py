"""The two row functions of ingest, shared by the Ray job and the single-process baseline.

1. :func:`validate_rows`: raw rows -> "staged" rows: every row either an event (``reason`` is None) or a
   reject (``reason`` set, the original row kept in ``raw``), with the hash bucket of its user.
2. :func:`group_bucket`: all staged rows of some users -> one document per user, plus the rejects: bad rows,
   duplicate deliveries, and users none of whose rows could be used (``no_usable_events``).

Conservation holds per bucket: every staged row is used or rejected, every user id seen is in the
documents or in the rejects.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from conf_profile.core.documents import DocumentBudget, build_document
from conf_profile.core.events import Event, Limits, parse_event
from conf_profile.core.mapping import DEFAULT_MAPPING, IGNORED, InputMapping, canonical_row, line_of

STAGED_COLUMNS = ("user_id", "event_id", "ts_ms", "source", "text", "reason", "raw", "bucket")
REJECT_COLUMNS = ("reason", "user_id", "event_id", "raw")
MAX_RAW_CHARS = 2000  # the original row is kept in rejects up to this many characters
NO_USER_BUCKET = -1  # rows without a usable user id: rejected in phase 1, grouped nowhere


def bucket_of(user_id: str, buckets: int) -> int:
    """Stable hash bucket of a user id (crc32: the same in every process and run): the one user hash of the
    project (ingest's buckets, the SFT eval split, the references' halves).

    >>> bucket_of("u_1", 16) == bucket_of("u_1", 16)
    True
    """
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % buckets


def raw_row(row: dict[str, Any]) -> str:
    """The original row as JSON, cut to MAX_RAW_CHARS; never raises (odd values are repr'd).

    >>> raw_row({"user_id": None, "payload": "\\ud83d"})
    '{"user_id": null, "payload": "\\\\ud83d"}'
    """
    return json.dumps(row, ensure_ascii=True, default=repr)[:MAX_RAW_CHARS]


def validate_rows(
    rows: Iterable[dict[str, Any] | str], limits: Limits, buckets: int, mapping: InputMapping = DEFAULT_MAPPING
) -> dict[str, list[Any]]:
    """Staged columns (see STAGED_COLUMNS) for a batch of raw rows: dicts (Parquet or CSV rows) or JSONL
    lines, read through the input mapping (core/mapping.py)."""
    out: dict[str, list[Any]] = {c: [] for c in STAGED_COLUMNS}
    mapped = mapping != DEFAULT_MAPPING
    for item in rows:
        for column, value in zip(STAGED_COLUMNS, _stage(item, limits, buckets, mapping if mapped else None),
                                 strict=True):  # fmt: skip
            out[column].append(value)
    return out


def _stage(item: dict[str, Any] | str, limits: Limits, buckets: int, mapping: InputMapping | None) -> tuple[Any, ...]:
    raw = _json_line(item) if isinstance(item, str) else item
    if raw is None:  # a JSONL line that is not a JSON object
        return (None, None, None, None, None, "malformed_row", str(item)[:MAX_RAW_CHARS], NO_USER_BUCKET)
    row, line = raw, None
    result: Event | str | None = None
    if mapping is not None:
        row = canonical_row(raw, mapping)
        kind = row.get("event_type")
        if isinstance(kind, str) and kind in mapping.ignore:
            result = IGNORED
        elif isinstance(kind, str) and kind in mapping.types:
            line = line_of(mapping.types[kind], limits.max_field_chars)
    if result is None:
        result = parse_event(row, limits, line)
    if isinstance(result, Event):
        bucket = bucket_of(result.user_id, buckets)
        return (result.user_id, result.event_id, result.ts_ms, result.source, result.text, None, None, bucket)
    uid = _plain_id(row.get("user_id")) if result != "missing_user_id" else None
    bucket = bucket_of(uid, buckets) if uid is not None else NO_USER_BUCKET
    kept = None if result == IGNORED else raw_row(raw)
    return (uid, _plain_id(row.get("event_id")), None, None, None, result, kept, bucket)


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) else None


def group_bucket(
    staged: dict[str, Sequence[Any]], budget: DocumentBudget
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Documents (sorted by user_id) and reject columns (see REJECT_COLUMNS) for the staged rows of a bucket."""
    events: dict[str, list[Event]] = {}
    rejected_users: set[str] = set()
    rejects: dict[str, list[Any]] = {c: [] for c in REJECT_COLUMNS}
    columns = [staged[c] for c in STAGED_COLUMNS[:7]]
    for uid, eid, ts, source, text, reason, raw in zip(*columns, strict=True):
        if reason is None:
            events.setdefault(uid, []).append(Event(uid, eid, ts, source, text))
        else:
            _add_reject(rejects, reason, uid, eid, raw)
            if uid is not None:
                rejected_users.add(uid)
    documents = []
    for uid in sorted(events):
        doc, duplicates = build_document(uid, events[uid], budget)
        documents.append(doc)
        for eid in duplicates:
            _add_reject(rejects, "duplicate_event", uid, eid, None)
    for uid in sorted(rejected_users - events.keys()):
        _add_reject(rejects, "no_usable_events", uid, None, None)
    return documents, rejects


def _add_reject(rejects: dict[str, list[Any]], reason: str, uid: str | None, eid: str | None, raw: str | None) -> None:
    for column, value in zip(REJECT_COLUMNS, (reason, uid, eid, raw), strict=True):
        rejects[column].append(value)


def _plain_id(value: Any) -> str | None:
    """An id for the rejects table as far as it can be kept (valid text only)."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text[:256] or None
