"""Build one bounded user document from a user's validated events.

The document is what the teacher and the student read. Sources come in the stable order of
:data:`~conf_profile.core.events.SOURCES`; within a source, lines are newest first (ties by text), repeats
of the same text collapse into one line with a count, each source stays under its own token budget and the
whole under the total budget. Everything is deterministic: the same events give the same bytes, whatever
order they arrive in.

>>> from conf_profile.core.events import Event
>>> evs = [Event("u1", "e1", 1767225600000, "search", "strollers"),
...        Event("u1", "e2", 1767312000000, "search", "strollers"),
...        Event("u1", "e2", 1767312000000, "search", "strollers"),
...        Event("u1", "e3", 1767225600000, "profile", "bio: mom of two")]
>>> doc, duplicates = build_document("u1", evs, DocumentBudget())
>>> print(doc["document"])
profile (1 event):
- 2026-01-01 | bio: mom of two
search (2 events):
- 2026-01-02 | strollers (x2)
>>> duplicates
['e2']
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from conf_profile.core.events import SOURCES, Event, estimate_tokens

DOCUMENT_FORMAT = "v1"  # part of the content hash: a format change re-labels every user


def default_source_budgets() -> dict[str, int]:
    return {"profile": 150, "comment": 350, "search": 250, "watch": 450, "follow": 150}


@dataclass(frozen=True)
class DocumentBudget:
    total_tokens: int = 1200
    source_tokens: Mapping[str, int] = field(default_factory=default_source_budgets)


def build_document(user_id: str, events: Iterable[Event], budget: DocumentBudget) -> tuple[dict[str, Any], list[str]]:
    """The document row for one user, and the event ids rejected as duplicate deliveries.

    ``events`` must be non-empty and all of ``user_id``.
    """
    unique, duplicates = _dedupe(events)
    if not unique:
        raise ValueError(f"user {user_id!r}: no events to build a document from")
    by_source: dict[str, list[Event]] = {s: [] for s in SOURCES}
    for ev in unique:
        by_source[ev.source].append(ev)
    remaining = budget.total_tokens
    parts: list[str] = []
    shown = 0
    for source in SOURCES:
        if not by_source[source]:
            continue
        allowance = min(budget.source_tokens.get(source, 0), remaining)
        block, lines = _source_block(source, by_source[source], allowance)
        if block:
            parts.append(block)
            remaining -= estimate_tokens(block) + 1  # the newline that joins it
            shown += lines
    document = "\n".join(parts)
    times = [ev.ts_ms for ev in unique]
    row: dict[str, Any] = {
        "user_id": user_id,
        "document": document,
        "n_events": len(unique),
        **{f"events_{s}": len(by_source[s]) for s in SOURCES},
        "lines_shown": shown,
        "truncated": shown < len({(ev.source, ev.text) for ev in unique}),
        "chars": len(document),
        "est_tokens": estimate_tokens(document),
        "first_event_ms": min(times),
        "last_event_ms": max(times),
        "content_hash": content_hash(document),
    }
    return row, duplicates


def content_hash(document: str) -> str:
    """Stable hash of a document (and of the document format), for skipping unchanged users."""
    return hashlib.sha256(f"{DOCUMENT_FORMAT}\n{document}".encode()).hexdigest()[:16]


def _dedupe(events: Iterable[Event]) -> tuple[list[Event], list[str]]:
    """Keep one event per event_id (the first in a canonical order), report the rest as duplicates."""
    ordered = sorted(events, key=lambda ev: (ev.event_id, ev.ts_ms, ev.source, ev.text))
    unique: list[Event] = []
    duplicates: list[str] = []
    for ev in ordered:
        if unique and unique[-1].event_id == ev.event_id:
            duplicates.append(ev.event_id)
        else:
            unique.append(ev)
    return unique, duplicates


def _source_block(source: str, events: list[Event], allowance: int) -> tuple[str, int]:
    """The source's header and as many lines as the allowance holds, newest first; (text, lines shown)."""
    counts: dict[str, int] = {}
    newest: dict[str, int] = {}
    for ev in events:
        counts[ev.text] = counts.get(ev.text, 0) + 1
        newest[ev.text] = max(newest.get(ev.text, ev.ts_ms), ev.ts_ms)
    texts = sorted(counts, key=lambda t: (-newest[t], t))
    lines = [f"- {_day(newest[t])} | {t}" + (f" (x{counts[t]})" if counts[t] > 1 else "") for t in texts]
    n = len(events)
    full_header = f"{source} ({n} event{'s' if n != 1 else ''}):"
    used = estimate_tokens(full_header) + 2  # a shortened header ("..., k shown") costs a little more
    kept: list[str] = []
    for line in lines:
        cost = estimate_tokens(line) + 1
        if used + cost > allowance:
            break
        kept.append(line)
        used += cost
    if not kept:
        return "", 0
    header = full_header if len(kept) == len(lines) else f"{source} ({n} events, {len(kept)} lines shown):"
    return "\n".join([header, *kept]), len(kept)


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
