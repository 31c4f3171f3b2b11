"""Student outputs -> profile rows (pure)."""

from __future__ import annotations

import json

import pyarrow as pa

from conf_profile.core.profiles import level_confidence, long_form, profile_row, profile_schema
from conf_profile.core.taxonomy import load_taxonomy

TAX = load_taxonomy()
CAL = {"attributes": {"gender": {"level_confidence": [0.1, 0.2, None, 0.7, 0.9]}}}


def output(**attrs) -> str:
    body = {"rationale": "why"}
    for a in TAX.attribute_names:
        value, level = attrs.get(a, ("unknown", 1))
        body[a] = {"value": value, "level": level, "evidence": f"ev {a}"}
    return json.dumps(body)


def test_levels_map_through_the_calibrator_and_fall_back_to_level_over_5() -> None:
    assert level_confidence(CAL, "gender", 4) == 0.7
    assert level_confidence(CAL, "gender", 3) == 0.6  # an empty level at fit time
    assert level_confidence(None, "age_group", 2) == 0.4
    row = profile_row("u", output(gender=("female", 5), occupation=("healthcare_worker", 2)), TAX, CAL)
    assert (row["gender"], row["gender_level"], row["gender_confidence"]) == ("female", 5, 0.9)
    assert (row["occupation"], row["occupation_confidence"], row["occupation_evidence"]) == (
        "healthcare_worker",
        0.4,
        "ev occupation",
    )
    assert row["age_group"] == "unknown" and row["age_group_confidence"] is None and row["age_group_level"] is None
    assert row["rationale"] == "why" and row["error"] is None


def test_an_unparseable_output_keeps_the_user_with_the_reason() -> None:
    row = profile_row("u", "I think the user is a nurse", TAX, CAL)
    assert row["error"] == "not_json" and all(row[a] == "unknown" for a in TAX.attribute_names)


def test_schema_and_long_form() -> None:
    rows = [{**profile_row(f"u{i}", output(gender=("male", 3)), TAX, None), "model": "m"} for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=profile_schema(TAX, ("model",)))
    assert table.schema.field("gender_level").type == pa.int8() and "model" in table.column_names
    long = long_form(table, TAX)
    assert long.num_rows == 3 * len(TAX.attribute_names)
    gender = [r for r in long.to_pylist() if r["attribute"] == "gender"]
    assert {r["value"] for r in gender} == {"male"} and {r["level"] for r in gender} == {3}
