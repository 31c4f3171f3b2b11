"""The input mapping (pure core): foreign log layouts onto the canonical row, templates, time units, the
ignore list, and the errors a bad mapping gets at config load."""

from __future__ import annotations

import json

import pytest

from conf_profile.core.config import ConfigError, build
from conf_profile.core.events import Event, Limits, parse_event
from conf_profile.core.ingest import validate_rows
from conf_profile.core.mapping import (
    DEFAULT_MAPPING,
    IGNORED,
    EventType,
    InputMapping,
    canonical_row,
    derived_event_id,
    event_time,
    line_of,
    render,
)
from conf_profile.core.settings import Config

CLICKS = InputMapping(
    user_id="visitor", event_id="hit_id", event_time="ts_ms", time_unit="ms", event_type="action", payload=None,
    types={"view": EventType("watch", "{product} [{category}]", optional=["category"]),
           "search": EventType("search", "{q}"), "review": EventType("comment", "{body} (on: {product})")},
    ignore=["heartbeat"],
)  # fmt: skip
POSTS = InputMapping(user_id="author", event_id=None, event_time="created", event_type=None, default_type="post",
                     payload=None, types={"post": EventType("comment", "{text}")})  # fmt: skip


def _stage(rows: list, mapping: InputMapping) -> list[dict]:
    staged = validate_rows(rows, Limits(), 4, mapping)
    return [dict(zip(staged, values, strict=True)) for values in zip(*staged.values(), strict=True)]


def test_a_flat_clickstream_with_epoch_milliseconds_is_read_through_its_mapping() -> None:
    rows = [
        {"visitor": 42, "hit_id": "h1", "ts_ms": 1767225600000, "action": "view", "product": "Tent",
         "category": "outdoor"},
        {"visitor": 42, "hit_id": "h2", "ts_ms": 1767225660000, "action": "view", "product": "Stove", "category": None},
        {"visitor": 42, "hit_id": "h3", "ts_ms": 1767225720000, "action": "search", "q": "sleeping  bag"},
        {"visitor": 42, "hit_id": "h4", "ts_ms": 1767225780000, "action": "heartbeat"},
        {"visitor": 42, "hit_id": "h5", "ts_ms": 1767225840000, "action": "purchase", "product": "Tent"},
        {"visitor": 42, "hit_id": "h6", "ts_ms": 1767225900000, "action": "review", "body": "great"},
    ]  # fmt: skip
    staged = _stage(rows, CLICKS)
    assert [(s["source"], s["text"]) for s in staged[:3]] == [("watch", "Tent [outdoor]"), ("watch", "Stove []"),
                                                              ("search", "sleeping bag")]  # fmt: skip
    assert staged[0]["user_id"] == "42" and staged[0]["ts_ms"] == 1767225600000 and staged[0]["event_id"] == "h1"
    # ignored on purpose (no raw row kept); a type nobody mapped; a template field the row lacks
    assert [(s["reason"], s["raw"] is None) for s in staged[3:]] == [(IGNORED, True), ("unknown_event_type", False),
                                                                     ("missing_field", False)]  # fmt: skip
    assert all(s["user_id"] == "42" for s in staged)  # every reject keeps its user: nothing is lost


def test_free_text_posts_without_type_or_id_columns() -> None:
    rows = [{"author": "ana", "created": "2026-01-05T10:00:00Z", "text": "Finished my  <b>nursing</b> shift"},
            {"author": "ana", "created": "2026-01-05T10:00:00Z", "text": "Finished my  <b>nursing</b> shift"},
            {"author": "ana", "created": "2026-01-06T09:00:00Z", "text": "   "}]  # fmt: skip
    staged = _stage(rows, POSTS)
    assert staged[0]["source"] == "comment" and staged[0]["text"] == "Finished my ‹b›nursing‹/b› shift"
    assert staged[0]["event_id"] == staged[1]["event_id"] == derived_event_id(rows[0])  # the same row: one event
    assert staged[2]["reason"] == "empty_text"  # nothing left after normalization


def test_time_units_and_values_that_do_not_fit() -> None:
    assert event_time("1767225600", "s") == 1767225600000 and event_time(1767225600.5, "s") == 1767225600500
    assert event_time("1767225600000", "ms") == 1767225600000 and event_time("soon", "ms") == "soon"
    assert event_time("2026-01-01T00:00:00Z", "iso") == "2026-01-01T00:00:00Z" and event_time(5, "iso") is None
    assert event_time("1767225600", "auto") == 1767225600 and event_time("2026-01-01", "auto") == "2026-01-01"
    mapping = InputMapping(event_time="t", time_unit="s", payload=None, types={"x": EventType("search", "{q}")})
    row = canonical_row({"user_id": "u", "event_id": "e", "t": "not a time", "event_type": "x", "q": "a"}, mapping)
    assert parse_event(row, Limits(), line_of(mapping.types["x"], 100)) == "bad_timestamp"


def test_templates_render_scalars_and_lists_and_refuse_the_rest() -> None:
    rule = EventType("watch", "{title} [tags: {tags}] {minutes} min", optional=["tags"])
    assert render(rule, {"title": "Up", "tags": ["family", "animation"], "minutes": 96}, 1000) == (
        "Up [tags: family, animation] 96 min")  # fmt: skip
    assert render(rule, {"title": "Up", "minutes": {"a": 1}}, 1000) == "wrong_type"
    assert render(rule, {"title": "Up", "minutes": True}, 1000) == "wrong_type"
    assert render(rule, {"title": "x" * 50, "minutes": 1}, 10) == "oversize_text"
    assert render(rule, {"title": "\ud83d", "minutes": 1}, 100) == "invalid_unicode"
    long = parse_event({"user_id": "u", "event_id": "e", "event_time": 1767225600, "event_type": "x",
                        "payload": {"title": "word " * 200, "minutes": 1}}, Limits(max_line_chars=40),
                       line_of(rule, 20_000))  # fmt: skip
    assert isinstance(long, Event) and len(long.text) <= 40 and long.text.endswith("…")


def test_the_default_mapping_is_the_built_in_layout() -> None:
    row = {"event_id": "e1", "user_id": "u1", "event_time": "2026-03-04T12:00:00Z", "event_type": "search",
           "payload": json.dumps({"query": "strollers"})}  # fmt: skip
    assert canonical_row(row, DEFAULT_MAPPING) is row
    assert _stage([row], DEFAULT_MAPPING)[0]["text"] == "strollers"
    assert Config().ingest.mapping == DEFAULT_MAPPING


def test_a_bad_mapping_is_refused_at_config_load_with_the_fix() -> None:
    def load(mapping: dict) -> Config:
        return build(Config, {"ingest": {"mapping": mapping}})

    cfg = load({"user_id": "visitor", "payload": None, "types": {"view": {"source": "watch", "template": "{p}"}}})
    assert cfg.ingest.mapping.types["view"] == EventType("watch", "{p}") and cfg.ingest.mapping.payload is None
    with pytest.raises(ConfigError, match="types.view: source='clicks': use one of profile, comment"):
        load({"types": {"view": {"source": "clicks", "template": "{p}"}}})
    with pytest.raises(ConfigError, match="name at least one field"):
        load({"types": {"view": {"source": "watch", "template": "no fields"}}})
    with pytest.raises(ConfigError, match="fields are plain names"):
        load({"types": {"view": {"source": "watch", "template": "{p.x}"}}})
    with pytest.raises(ConfigError, match="not fields of the template"):
        load({"types": {"view": {"source": "watch", "template": "{p}", "optional": ["q"]}}})
    with pytest.raises(ConfigError, match="also mapped in types"):
        load({"types": {"view": {"source": "watch", "template": "{p}"}}, "ignore": ["view"]})
    with pytest.raises(ConfigError, match="time_unit"):
        load({"time_unit": "minutes"})
    with pytest.raises(ConfigError, match="every row would be dropped"):
        load({"event_type": None, "default_type": "x", "ignore": ["x"]})
