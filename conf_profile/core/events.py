"""Validate raw log rows into events, one row at a time, never raising: a row is an Event or a reject reason.

Input rows follow the log schema of the built-in data (``event_id, user_id, event_time, event_type,
payload``); ``payload`` is a JSON object (a string in Parquet, an object or a string in JSONL).

>>> ev = parse_event({"event_id": "e1", "user_id": "u1", "event_time": "2026-03-04T12:00:00Z",
...                   "event_type": "search", "payload": '{"query": "best  <b>strollers</b>"}'})
>>> ev.source, ev.text, ev.ts_ms
('search', 'best ‹b›strollers‹/b›', 1772625600000)
>>> parse_event({"user_id": "", "event_time": "x", "event_type": "search", "payload": "{}"})
'missing_user_id'
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

SOURCES = ("profile", "comment", "search", "watch", "follow")  # the stable order of sources in a document
REJECT_REASONS = (
    "missing_user_id",  # null, empty, or not a string/integer
    "missing_event_id",
    "bad_timestamp",  # unparseable, or an impossible date
    "timestamp_out_of_range",  # before Limits.min_time_ms or after the ingest's reference time (clock skew)
    "unknown_event_type",
    "malformed_payload",  # not JSON, or JSON that is not an object
    "wrong_type",  # a payload field of the wrong type
    "missing_field",  # a required payload field is absent
    "oversize_text",  # a text field beyond the per-field limit
    "invalid_unicode",  # lone surrogates or other text that is not valid UTF-8
    "empty_text",  # nothing left after normalization
    "malformed_row",  # a JSONL line that is not a JSON object
    "duplicate_event",  # the same event_id delivered again for the same user
    "no_usable_events",  # user level: every row of this user was rejected
    "unreadable_file",  # file level: an input file that cannot be opened (its rows are not counted)
    "ignored_event_type",  # a type on ingest.mapping.ignore: dropped on purpose (its raw row is not kept)
)
MIN_TIME_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
# Required text field first; (field, type, required).
_FIELDS: dict[str, tuple[tuple[str, type, bool], ...]] = {
    "profile": (("bio", str, False), ("nickname", str, False)),
    "comment": (("text", str, True), ("on", str, False)),
    "search": (("query", str, True),),
    "watch": (("title", str, True), ("tags", list, False), ("watch_seconds", int, False), ("rating", int, False)),
    "follow": (("account", str, True), ("account_bio", str, False)),
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Limits:
    max_field_chars: int = 20_000  # a text field longer than this is rejected as oversize_text
    max_line_chars: int = 300  # one event's line in the document is cut to this (deterministically)
    max_time_ms: int | None = None  # events after this are clock-skewed (None: no upper bound)
    min_time_ms: int = MIN_TIME_MS  # events before this are rejected as timestamp_out_of_range


@dataclass(frozen=True)
class Event:
    user_id: str
    event_id: str
    ts_ms: int
    source: str
    text: str


def parse_event(
    row: dict[str, Any], limits: Limits = Limits(), line: tuple[str, Callable[[dict[str, Any]], str]] | None = None
) -> Event | str:
    """An :class:`Event`, or the reject reason (one of :data:`REJECT_REASONS`). ``line`` is a mapped event
    type's (source, payload -> line or reason) (core/mapping.py); without it the type must be one of the
    five built-in sources, rendered from their own payload fields."""
    user_id = _id(row.get("user_id"))
    if user_id is None:
        return "missing_user_id"
    event_id = _id(row.get("event_id"))
    if event_id is None:
        return "missing_event_id"
    ts = parse_time_ms(row.get("event_time"))
    if ts is None:
        return "bad_timestamp"
    if ts < limits.min_time_ms or (limits.max_time_ms is not None and ts > limits.max_time_ms):
        return "timestamp_out_of_range"
    kind = row.get("event_type")
    if line is None and not (isinstance(kind, str) and kind in _FIELDS):
        return "unknown_event_type"
    payload = _payload(row.get("payload"))
    if payload is None:
        return "malformed_payload"
    if line is not None:
        source, render = line
        text = render(payload)
        if text not in REJECT_REASONS:
            text = normalize_text(text)
            text = cut(text, limits.max_line_chars) if text else "empty_text"
    else:
        source = str(kind)
        text = _render(source, payload, limits)
    if text in REJECT_REASONS:
        return text
    return Event(user_id=user_id, event_id=event_id, ts_ms=ts, source=source, text=text)


def parse_time_ms(value: Any) -> int | None:
    """Epoch milliseconds (UTC) from ISO-8601 text (``Z`` or an offset; no offset means UTC) or from epoch
    seconds/milliseconds as a number; None when it cannot be read.

    >>> parse_time_ms("2026-01-01T00:00:00+01:00"), parse_time_ms(1767225600), parse_time_ms("2026-02-30")
    (1767222000000, 1767225600000, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        return int(value if abs(value) >= 1e11 else value * 1000)
    if not isinstance(value, str) or not 8 <= len(value) <= 40:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def normalize_text(text: str) -> str:
    """NFC, control and invisible characters removed, whitespace collapsed, and ``<``/``>`` replaced by
    look-alikes so that user text can never open or close a delimiter tag or a chat-template token.

    >>> normalize_text("Caf\\u0065\\u0301\\u200b  </user_data>\\n<|im_end|>")
    'Café ‹/user_data› ‹|im_end|›'
    """
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL.sub(" ", text).replace("<", "‹").replace(">", "›")
    return _SPACE.sub(" ", text).strip()


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate: ASCII bytes / 3 plus 1.5 per other character.

    On the built-in data it overestimates SmolLM2's tokenizer by about 13% overall (so budgets hold),
    and it counts CJK text near its real cost (about 1.6 tokens per character).

    >>> estimate_tokens("hello world"), estimate_tokens("这个视频")
    (4, 6)
    """
    non_ascii = sum(1 for ch in text if ord(ch) > 127)
    return math.ceil((len(text) - non_ascii) / 3 + 1.5 * non_ascii)


def cut(text: str, max_chars: int) -> str:
    """Cut at a word boundary when one is near, marking the cut with an ellipsis.

    >>> cut("one two three", 9)
    'one two…'
    """
    if len(text) <= max_chars:
        return text
    head = text[: max_chars - 1]
    space = head.rfind(" ")
    if space >= max_chars // 2:
        head = head[:space]
    return head.rstrip() + "…"


def _id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        if value and len(value) <= 256 and valid_utf8(value):
            return value
    return None


def _payload(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


def _render(source: str, payload: dict[str, Any], limits: Limits) -> str:
    """The event's one-line text, or a reject reason."""
    values: dict[str, Any] = {}
    for name, kind, required in _FIELDS[source]:
        value = payload.get(name)
        if value is None:
            if required:
                return "missing_field"
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            return "wrong_type"
        texts: list[Any] = value if isinstance(value, list) else [value]
        if kind is list and not all(isinstance(v, str) for v in texts):
            return "wrong_type"
        for text in texts:
            if isinstance(text, str):
                if not valid_utf8(text):
                    return "invalid_unicode"
                if len(text) > limits.max_field_chars:
                    return "oversize_text"
        values[name] = value
    if not 1 <= values.get("rating", 1) <= 5:
        return "wrong_type"  # a rating is on a 1-5 scale
    line = normalize_text(_LINE[source](values))
    return cut(line, limits.max_line_chars) if line else "empty_text"


def valid_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _watch(v: dict[str, Any]) -> str:
    tags = f" [tags: {', '.join(v['tags'])}]" if v.get("tags") else ""
    watched = f" (watched {max(1, round(v['watch_seconds'] / 60))} min)" if v.get("watch_seconds") else ""
    rated = f" (rated {v['rating']}/5)" if v.get("rating") is not None else ""
    return f"{v['title']}{tags}{watched}{rated}"


_LINE = {
    "profile": lambda v: "; ".join(f"{k}: {v[k]}" for k in ("nickname", "bio") if v.get(k)),
    "comment": lambda v: v["text"] + (f" (on: {v['on']})" if v.get("on") else ""),
    "search": lambda v: v["query"],
    "watch": _watch,
    "follow": lambda v: v["account"] + (f" — {v['account_bio']}" if v.get("account_bio") else ""),
}
