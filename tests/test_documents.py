from __future__ import annotations

import random

import pytest

from conf_profile.core.documents import DocumentBudget, build_document, content_hash
from conf_profile.core.events import SOURCES, Event, estimate_tokens

DAY = 86_400_000
T0 = 1767225600000  # 2026-01-01


def ev(eid: str, day: int, source: str = "search", text: str | None = None) -> Event:
    return Event("u1", eid, T0 + day * DAY, source, text or f"text {eid}")


def test_sources_in_stable_order_newest_first_and_repeats_collapsed() -> None:
    events = [
        ev("a", 1, "watch"),
        ev("b", 3, "watch"),
        ev("c", 2, "profile", "bio: x"),
        ev("d", 5, "watch", "same"),
        ev("e", 4, "watch", "same"),
    ]
    doc, dups = build_document("u1", events, DocumentBudget())
    assert dups == []
    assert doc["document"].splitlines() == [
        "profile (1 event):",
        "- 2026-01-03 | bio: x",
        "watch (4 events):",
        "- 2026-01-06 | same (x2)",
        "- 2026-01-04 | text b",
        "- 2026-01-02 | text a",
    ]
    assert (doc["n_events"], doc["events_watch"], doc["events_profile"], doc["events_search"]) == (5, 4, 1, 0)
    assert (doc["first_event_ms"], doc["last_event_ms"]) == (T0 + DAY, T0 + 5 * DAY)
    assert doc["lines_shown"] == 4 and doc["truncated"] is False
    assert doc["chars"] == len(doc["document"]) and doc["content_hash"] == content_hash(doc["document"])


def test_same_events_in_any_order_give_the_same_document() -> None:
    rng = random.Random(1)
    events = [ev(f"e{i}", rng.randrange(30), rng.choice(SOURCES), f"t{rng.randrange(40)}") for i in range(200)]
    first, _ = build_document("u1", events, DocumentBudget(total_tokens=300))
    for _ in range(5):
        rng.shuffle(events)
        again, _ = build_document("u1", events, DocumentBudget(total_tokens=300))
        assert again == first


def test_duplicate_deliveries_are_reported_once_each() -> None:
    events = [ev("a", 1), ev("a", 1), ev("a", 1), ev("b", 2)]
    doc, dups = build_document("u1", events, DocumentBudget())
    assert dups == ["a", "a"] and doc["n_events"] == 2


@pytest.mark.parametrize("total", [60, 200, 1200])
def test_budgets_hold_for_the_whole_and_each_source(total) -> None:
    rng = random.Random(total)
    events = [
        ev(f"e{i}", rng.randrange(100), rng.choice(SOURCES), "word " * rng.randrange(1, 40) + str(i))
        for i in range(400)
    ]
    budget = DocumentBudget(total_tokens=total)
    doc, _ = build_document("u1", events, budget)
    assert doc["est_tokens"] <= total
    assert doc["truncated"] is True and doc["lines_shown"] < 400
    blocks = doc["document"].split("\n")
    for source in SOURCES:
        block = [line for line in _block(blocks, source)]
        if block:
            assert estimate_tokens("\n".join(block)) <= budget.source_tokens[source]
            assert "lines shown" in block[0]


def _block(lines: list[str], source: str) -> list[str]:
    out, inside = [], False
    for line in lines:
        if not line.startswith("- "):
            inside = line.startswith(f"{source} (")
        if inside:
            out.append(line)
    return out


def test_a_source_with_no_budget_is_left_out() -> None:
    budget = DocumentBudget(source_tokens={"search": 0, "watch": 100})
    doc, _ = build_document("u1", [ev("a", 1, "search"), ev("b", 1, "watch")], budget)
    assert "search" not in doc["document"] and "watch (1 event)" in doc["document"]
    assert doc["events_search"] == 1 and doc["truncated"] is True


def test_content_hash_changes_with_the_content() -> None:
    a, _ = build_document("u1", [ev("a", 1)], DocumentBudget())
    b, _ = build_document("u1", [ev("a", 1), ev("b", 2)], DocumentBudget())
    assert a["content_hash"] != b["content_hash"] and len(a["content_hash"]) == 16


def test_no_events_is_an_error() -> None:
    with pytest.raises(ValueError, match="no events"):
        build_document("u1", [], DocumentBudget())
