"""Student outputs -> profile rows (pure)."""

from __future__ import annotations

import json

import pyarrow as pa

from conf_profile.core.profiles import (
    calibration_hash,
    consensus_rows,
    gold_answers,
    level_confidence,
    long_form,
    profile_row,
    profile_schema,
    recalibrate,
)
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


def test_consensus_of_one_output_is_the_plain_profile_row() -> None:
    text = output(gender=("female", 4))
    assert consensus_rows(["u"], [[text]], TAX, CAL) == [profile_row("u", text, TAX, CAL)]


def test_consensus_votes_by_stated_level_and_combines_levels_on_the_calibrated_scale() -> None:
    levels = {"thresholds": [0.2, 0.4, 0.6, 0.8], "level_confidence": [0.1, 0.3, 0.5, 0.7, 0.9]}
    cal = {"attributes": {"gender": levels}}
    texts = [output(gender=("female", 2), occupation=("student", 3)), output(gender=("male", 5)),
             output(gender=("male", 4), occupation=("student", 3))]  # fmt: skip
    row = consensus_rows(["u"], [texts], TAX, cal)[0]
    # gender: male 1.0 + 0.8 of 2.2 (share 0.818) x mean level 4.5 = 3.68 -> level 4 -> the calibrator's 0.7
    assert (row["gender"], row["gender_level"], row["gender_confidence"]) == ("male", 4, 0.7)
    assert row["gender_evidence"] == "ev gender"
    # occupation: student 0.6 + 0.6 against one abstention at full weight 1.0: share 0.545 x 3 = 1.64 -> 2;
    # no calibrator entry -> level / 5
    assert (row["occupation"], row["occupation_level"], row["occupation_confidence"]) == ("student", 2, 0.4)
    assert row["age_group"] == "unknown" and row["age_group_level"] is None and row["age_group_confidence"] is None
    assert row["error"] is None and row["rationale"] == "why"


def test_unanimous_outputs_keep_the_single_outputs_level_and_confidence() -> None:
    cal = {"attributes": {"gender": {"level_confidence": [0.1, 0.3, 0.5, 0.7, 0.9]}}}
    text = output(gender=("female", 3))
    row = consensus_rows(["u"], [[text, text, text]], TAX, cal)[0]
    single = profile_row("u", text, TAX, cal)
    assert all(row[k] == single[k] for k in single)


def test_consensus_keeps_users_whose_outputs_all_fail_and_ignores_the_failures_otherwise() -> None:
    rows = consensus_rows(["bad", "mixed"], [["nope", "{"], ["nope", output(gender=("male", 3))]], TAX, None)
    assert rows[0]["user_id"] == "bad" and rows[0]["error"] == "not_json"
    assert all(rows[0][a] == "unknown" for a in TAX.attribute_names)
    assert rows[1]["error"] is None and rows[1]["gender"] == "male" and rows[1]["gender_level"] == 3
    table = pa.Table.from_pylist(rows, schema=profile_schema(TAX))  # the rows fit the contract's schema
    assert table.num_rows == 2


def test_several_abstentions_lower_the_level_of_one_confident_answer() -> None:
    # the student states abstentions at level 1 (its training target); they still count in full, so the one
    # answer wins (the vote abstains only when no output names a value) at share 1/3: level round(5/3) = 2
    texts = [output(gender=("female", 5)), output(gender=("unknown", 1)), output(gender=("unknown", 1))]
    row = consensus_rows(["u"], [texts], TAX, None)[0]
    assert row["gender"] == "female" and row["gender_level"] == 2 and row["gender_confidence"] == 0.4
    silent = consensus_rows(["u"], [[output(gender=("unknown", 1))] * 3], TAX, None)[0]
    assert silent["gender"] == "unknown" and silent["gender_confidence"] is None and silent["gender_evidence"] is None


def test_gold_answers_are_the_answered_rows_of_users_with_a_true_value() -> None:
    rows = [profile_row("a", output(gender=("female", 5), age_group=("age_25_34", 2)), TAX, CAL),
            profile_row("b", output(gender=("male", 3)), TAX, CAL),
            profile_row("c", output(gender=("female", 1)), TAX, CAL),
            profile_row("d", "not json", TAX, CAL)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=profile_schema(TAX))
    truth = {"gender": {"a": "female", "b": "female", "c": None, "d": "male"}, "age_group": {"a": "age_35_44"}}
    levels, correct = gold_answers(table, TAX, truth)
    assert levels["gender"].tolist() == [5, 3] and correct["gender"].tolist() == [1.0, 0.0]  # c: no truth; d: none
    assert levels["age_group"].tolist() == [2] and correct["age_group"].tolist() == [0.0]
    assert levels["occupation"].size == 0


def test_recalibrate_rereads_each_answered_confidence_from_its_level() -> None:
    rows = [profile_row("a", output(gender=("female", 5), age_group=("age_25_34", 2)), TAX, CAL),
            profile_row("b", output(gender=("male", 2)), TAX, CAL)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=profile_schema(TAX, ("calibration_hash",)))
    new = {"attributes": {"gender": {"level_confidence": [0.35, 0.4, 0.5, 0.6, 0.65]}}}
    out = recalibrate(table, TAX, new)
    assert out.schema == table.schema
    assert out.column("gender_confidence").to_pylist() == [0.65, 0.4]
    assert out.column("age_group_confidence").to_pylist() == [0.4, None]  # no table: level / 5; unanswered: null
    assert out.column("calibration_hash").to_pylist() == [calibration_hash(new)] * 2
    assert out.column("gender").to_pylist() == table.column("gender").to_pylist()
