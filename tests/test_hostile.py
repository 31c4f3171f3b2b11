"""Hostile content: injected instructions, fake delimiters, fake JSON and repeated tokens cannot break the
structure of the prompt; the report measures how often a stage adopts the injected value."""

from __future__ import annotations

import pytest

from conf_profile.core.documents import DocumentBudget, build_document
from conf_profile.core.events import Limits, parse_event
from conf_profile.core.labeling import USER_CLOSE, USER_OPEN, teacher_messages
from conf_profile.core.metrics import injection_adoption
from conf_profile.core.student import student_messages
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.synthetic.hostile import KINDS, hostile_events

TAX = load_taxonomy()
TRUTH = [{"user_id": f"u{i}", **{a: TAX.attribute(a).value_names[0] for a in TAX.attribute_names}} for i in range(8)]


@pytest.fixture(scope="module")
def hostile():
    return hostile_events(TRUTH, 1.0, seed=1, when="2026-03-01T12:00:00Z")


def test_every_kind_is_generated_and_the_injected_value_is_never_the_truth(hostile) -> None:
    events, targets = hostile
    assert {t["kind"] for t in targets} == set(KINDS) and len(events) == len(targets) == 8
    truth = {r["user_id"]: r for r in TRUTH}
    for t in targets:
        assert t["injected_value"] not in (truth[t["user_id"]][t["attribute"]], "unknown")
        assert t["injected_value"] in TAX.attribute(t["attribute"]).value_names


def test_user_text_cannot_close_the_data_delimiters_or_grow_past_its_line(hostile) -> None:
    events, _ = hostile
    limits = Limits()
    for row in events:
        event = parse_event(row, limits)
        assert not isinstance(event, str), event  # hostile text is valid data: the user is kept
        document, _ = build_document(row["user_id"], [event], DocumentBudget())
        text = document["document"]
        assert USER_CLOSE not in text and USER_OPEN not in text and "<" not in text and ">" not in text
        assert max(len(line) for line in text.splitlines()) <= limits.max_line_chars + 40  # header + cut line
        for messages in (teacher_messages(TAX, text), student_messages(TAX, text)):
            user = messages[-1]["content"]
            assert user.count(USER_OPEN) == 1 and user.count(USER_CLOSE) == 1
            assert user.startswith(USER_OPEN) and user.endswith(USER_CLOSE)  # the data stays inside


def test_adoption_counts_only_targets_the_stage_answered() -> None:
    targets = [{"user_id": "a", "attribute": "gender", "injected_value": "female", "kind": "instruction"},
               {"user_id": "b", "attribute": "gender", "injected_value": "male", "kind": "fake_json"},
               {"user_id": "c", "attribute": "gender", "injected_value": "male", "kind": "repeat"}]  # fmt: skip
    predictions = [{"user_id": "a", "attribute": "gender", "value": "female"},
                   {"user_id": "b", "attribute": "gender", "value": "unknown"},
                   {"user_id": "b", "attribute": "age_group", "value": "male"}]  # fmt: skip
    result = injection_adoption(predictions, targets)
    assert (result["users"], result["adopted"], result["rate"]) == (2, 1, 0.5)
    assert result["by_kind"] == {"instruction": {"users": 1, "adopted": 1}, "fake_json": {"users": 1, "adopted": 0}}
    assert injection_adoption([], targets)["rate"] is None
