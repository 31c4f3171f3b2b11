from __future__ import annotations

import json

from conf_profile.core.documents import DocumentBudget
from conf_profile.core.events import Limits
from conf_profile.core.ingest import NO_USER_BUCKET, STAGED_COLUMNS, bucket_of, group_bucket, raw_row, validate_rows


def good(uid: str, eid: str, day: int = 1) -> dict:
    return {
        "event_id": eid,
        "user_id": uid,
        "event_time": f"2026-01-{day:02d}T00:00:00Z",
        "event_type": "search",
        "payload": json.dumps({"query": f"q {eid}"}),
    }


def test_validate_rows_stages_events_and_rejects_with_buckets() -> None:
    rows = [good("u1", "e1"), {**good("u2", "e2"), "event_time": "nope"}, {**good("", "e3")}]
    staged = validate_rows(rows, Limits(), buckets=8)
    assert list(staged) == list(STAGED_COLUMNS)
    assert staged["reason"] == [None, "bad_timestamp", "missing_user_id"]
    assert staged["user_id"] == ["u1", "u2", None]
    assert staged["bucket"] == [bucket_of("u1", 8), bucket_of("u2", 8), NO_USER_BUCKET]
    assert staged["raw"][0] is None and json.loads(staged["raw"][1])["event_time"] == "nope"


def test_jsonl_lines_are_parsed_and_bad_lines_rejected() -> None:
    lines = [json.dumps(good("u1", "e1")), "{not json", "[1, 2]", '"just a string"']
    staged = validate_rows(lines, Limits(), buckets=2)
    assert staged["reason"] == [None, "malformed_row", "malformed_row", "malformed_row"]
    assert staged["raw"][1] == "{not json"


def test_group_bucket_conserves_rows_and_users() -> None:
    rows = [
        good("u1", "e1"),
        good("u1", "e1"),
        good("u1", "e2", 2),  # a duplicate delivery
        {**good("u2", "e3"), "event_type": "odd"},  # u2: nothing usable
        {**good("u3", "e4"), "payload": "{"},
        good("u3", "e5"),  # u3: one bad, one good
        {**good(None, "e6")},
    ]
    staged = validate_rows(rows, Limits(), buckets=1)
    docs, rejects = group_bucket(staged, DocumentBudget())
    assert [d["user_id"] for d in docs] == ["u1", "u3"]
    reasons = sorted(
        zip(rejects["reason"], rejects["user_id"], rejects["event_id"], strict=True), key=lambda r: (r[0], r[1] or "")
    )
    assert reasons == [
        ("duplicate_event", "u1", "e1"),
        ("malformed_payload", "u3", "e4"),
        ("missing_user_id", None, "e6"),
        ("no_usable_events", "u2", None),
        ("unknown_event_type", "u2", "e3"),
    ]
    row_rejects = [r for r in rejects["reason"] if r != "no_usable_events"]
    assert len(rows) == sum(d["n_events"] for d in docs) + len(row_rejects)
    users_seen = {r["user_id"] for r in rows if r["user_id"]}
    assert users_seen == {d["user_id"] for d in docs} | {u for r, u, _ in reasons if r == "no_usable_events"}


def test_bucket_is_stable_and_spreads_users() -> None:
    assert bucket_of("u_1", 16) == bucket_of("u_1", 16)
    assert len({bucket_of(f"u{i}", 16) for i in range(200)}) == 16


def test_raw_row_survives_anything_and_is_bounded() -> None:
    assert json.loads(raw_row({"a": b"bytes", "b": "\ud800"}))["a"] == "b'bytes'"
    assert len(raw_row({"text": "x" * 10_000})) == 2000
