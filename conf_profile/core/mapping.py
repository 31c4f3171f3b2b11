"""The input mapping: which columns of a log row hold the user, the event id, the time and the type, and how
each event type becomes a line of a document section (source). Rows of any layout are mapped onto the
canonical row that :func:`conf_profile.core.events.parse_event` validates:
``event_id, user_id, event_time (epoch ms or ISO text), event_type, payload (an object)``.

The default mapping is the built-in layout (the five sources' own payload fields, rendered by
core/events.py). A foreign layout names its columns, the unit of its times, and a template per event type:

>>> m = InputMapping(user_id="uid", event_id=None, event_time="ts", time_unit="ms", event_type="kind",
...                  payload=None, types={"click": EventType("watch", "{title} ({category})")})
>>> row = canonical_row({"uid": 7, "ts": "1767225600000", "kind": "click", "title": "Tent", "category": "outdoor"}, m)
>>> row["user_id"], row["event_time"], row["event_type"], render(m.types["click"], row["payload"], 20_000)
(7, 1767225600000, 'click', 'Tent (outdoor)')
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from conf_profile.core.events import SOURCES, valid_utf8

TIME_UNITS = ("auto", "iso", "s", "ms")
IGNORED = "ignored_event_type"  # the reject reason of a type on the ignore list (its raw row is not kept)


@dataclass
class EventType:
    """One event type of the input: the document section it feeds and its line."""

    source: str = "comment"  # profile, comment, search, watch or follow (the document's sections)
    # The line, over payload fields (or the row's columns when ingest.mapping.payload is null), e.g.
    # "{title} [{category}] (rated {rating}/5)". A field the row lacks rejects the row as missing_field,
    # unless it is listed in `optional` (then it renders as empty text).
    template: str = "{text}"
    optional: list[str] = field(default_factory=list)  # template fields a row may lack

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r}: use one of {', '.join(SOURCES)} (the document's sections)")
        names = template_fields(self.template)
        if not names:
            raise ValueError(f"template={self.template!r}: name at least one field, e.g. '{{text}}'")
        unknown = set(self.optional) - set(names)
        if unknown:
            raise ValueError(f"optional={sorted(unknown)}: not fields of the template {self.template!r}")


@dataclass
class InputMapping:
    """Which columns hold what. The defaults are the built-in layout (event_id, user_id, event_time,
    event_type, payload)."""

    user_id: str = "user_id"  # the column with the user id (text or a whole number)
    event_id: str | None = "event_id"  # null: derived from a hash of the whole row (identical rows are one event)
    event_time: str = "event_time"  # the column with the event's time
    # auto: ISO 8601 text, or a number (milliseconds from 1e11 up, else seconds); iso; s or ms: epoch
    # seconds / milliseconds (numbers or digit strings, as CSV gives them)
    time_unit: Literal["auto", "iso", "s", "ms"] = "auto"
    event_type: str | None = "event_type"  # null: every row is of type `default_type`
    default_type: str = "event"  # the type of every row when event_type is null
    payload: str | None = "payload"  # the column with a JSON object of fields; null: the row's own columns
    # Event types and their sections/lines. Types not listed here use the built-in five (profile, comment,
    # search, watch, follow) when they have those names; any other type is rejected as unknown_event_type.
    types: dict[str, EventType] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)  # types dropped on purpose (in rejects as ignored_event_type)

    def validate(self) -> None:
        for name, rule in self.types.items():
            try:
                rule.validate()
            except ValueError as exc:
                raise ValueError(f"types.{name}: {exc}") from exc
        both = set(self.types) & set(self.ignore)
        if both:
            raise ValueError(f"ignore: {sorted(both)} are also mapped in types; keep each type in one place")
        if self.event_type is None and self.default_type in self.ignore:
            raise ValueError(f"default_type={self.default_type!r} is ignored: every row would be dropped")


def template_fields(template: str) -> list[str]:
    """The field names a template uses (a malformed template raises ValueError).

    >>> template_fields("{title} [{tags}] {title}")
    ['title', 'tags']
    """
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            if not name.isidentifier():
                raise ValueError(f"template={template!r}: fields are plain names like {{title}}, got {{{name}}}")
            if name not in names:
                names.append(name)
    return names


def canonical_row(row: dict[str, Any], mapping: InputMapping) -> dict[str, Any]:
    """The canonical row for parse_event. Values it cannot read (a missing user id, a bad time) are passed on
    as they are, for parse_event to reject with its reason."""
    if mapping == DEFAULT_MAPPING:
        return row
    payload = row.get(mapping.payload) if mapping.payload is not None else row
    return {
        "user_id": row.get(mapping.user_id),
        "event_id": row.get(mapping.event_id) if mapping.event_id is not None else derived_event_id(row),
        "event_time": event_time(row.get(mapping.event_time), mapping.time_unit),
        "event_type": row.get(mapping.event_type) if mapping.event_type is not None else mapping.default_type,
        "payload": payload,
    }


def derived_event_id(row: dict[str, Any]) -> str:
    """A stable id from the row's content (key order does not matter).

    >>> derived_event_id({"a": 1, "b": "x"}) == derived_event_id({"b": "x", "a": 1})
    True
    """
    text = json.dumps(row, sort_keys=True, ensure_ascii=True, default=str)
    return "h" + hashlib.blake2b(text.encode("ascii"), digest_size=10).hexdigest()


def event_time(value: Any, unit: str) -> Any:
    """Epoch milliseconds for the s/ms units (numbers or digit strings); ISO text for iso; auto: digit
    strings become numbers. A value that does not fit is returned as it is (parse_event rejects it).

    >>> event_time("1767225600", "s"), event_time(1767225600123, "ms"), event_time("1767225600", "auto")
    (1767225600000, 1767225600123, 1767225600)
    >>> event_time(1767225600, "iso") is None  # iso expects text
    True
    """
    if unit == "iso":
        return value if isinstance(value, str) else None
    number = _number(value)
    if unit == "auto":
        return number if number is not None and isinstance(value, str) else value
    if number is None:
        return value
    return int(round(number * (1000 if unit == "s" else 1)))


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if text.lstrip("-").isdigit() else float(text)
        except ValueError:
            return None
    return None


def line_of(rule: EventType, max_field_chars: int) -> tuple[str, Callable[[dict[str, Any]], str]]:
    """(source, the payload -> line function) that parse_event takes for a mapped type."""
    return rule.source, lambda payload: render(rule, payload, max_field_chars)


def render(rule: EventType, payload: dict[str, Any], max_field_chars: int) -> str:
    """The event's line from its template, or a reject reason (missing_field, wrong_type, oversize_text,
    invalid_unicode). Lists of scalars render comma-joined; the line is not yet normalized or cut."""
    values: dict[str, str] = {}
    for name in template_fields(rule.template):
        value = payload.get(name)
        if value is None or value == "":
            if name not in rule.optional:
                return "missing_field"
            values[name] = ""
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
            return "wrong_type"
        text = ", ".join(str(v) for v in items)
        if not valid_utf8(text):
            return "invalid_unicode"
        if len(text) > max_field_chars:
            return "oversize_text"
        values[name] = text
    return rule.template.format_map(values)


DEFAULT_MAPPING = InputMapping()
