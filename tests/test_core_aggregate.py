"""Votes from a hand-built teacher_samples table, then the SFT and RL sets."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from conf_profile.core.aggregate import (
    current_samples,
    difficulties,
    mean_levels,
    rl_rows,
    sft_examples,
    split_of,
    teacher_reliability,
    user_votes,
    vote_samples,
)
from conf_profile.core.student import parse_student_output, student_schema
from conf_profile.core.taxonomy import taxonomy_from_dict

TAXONOMY = taxonomy_from_dict({
    "name": "t",
    "attributes": [
        {"name": "gender", "description": "g", "values": [{"name": "male", "definition": "m"},
                                                            {"name": "female", "definition": "f"}]},
        {"name": "age", "description": "a", "values": [{"name": "young", "definition": "y"},
                                                        {"name": "old", "definition": "o"}]},
    ],
})  # fmt: skip


def sample(user, teacher, k, gender, gc, age, ac, weight=1.0, rationale="", error=None, version="p1", chash="h"):
    return {"user_id": user, "teacher": teacher, "teacher_weight": weight, "sample": k, "prompt_version": version,
            "content_hash": chash, "error": error, "rationale": rationale,
            "gender_value": gender, "gender_confidence": gc, "gender_evidence": f"{teacher}{k} {gender}",
            "age_value": age, "age_confidence": ac, "age_evidence": f"{teacher}{k} {age}"}  # fmt: skip


SAMPLES = [
    # u1: teacher a says male twice at low confidence, teacher b (weight 2) says female confidently
    sample("u1", "a", 0, "male", 2, "young", 5, rationale="a0"),
    sample("u1", "a", 1, "male", 2, "young", 4, rationale="a1"),
    sample("u1", "b", 0, "female", 5, "unknown", 1, weight=2.0, rationale="b0"),
    # u2: a parse failure (no values) and one unanimous answer
    sample("u2", "a", 0, None, None, None, None, error="not_json"),
    sample("u2", "a", 1, "female", 5, "old", 5, rationale="only"),
]


def test_votes_weighted_majority_single_evidence_rationale() -> None:
    votes = {
        (r["user_id"], r["attribute"]): r
        for r in vote_samples(pa.Table.from_pylist(SAMPLES), TAXONOMY, "a").to_pylist()
    }
    g = votes[("u1", "gender")]
    # male: 0.4 + 0.4 = 0.8; female: 2.0 x 1.0 = 2.0 -> female, share 2/2.8
    assert g["value"] == "female" and g["vote_share"] == pytest.approx(2.0 / 2.8)
    assert g["majority_value"] == "male" and g["majority_share"] == pytest.approx(2 / 3)
    assert g["single_value"] == "male" and g["single_confidence"] == pytest.approx(0.4)
    assert g["evidence"] == "b0 female" and g["supporters"] == 1 and g["samples"] == 3 and g["valid"] == 3
    assert g["raw_confidence"] == pytest.approx(2.0 / 2.8 * 5 / 5)
    a = votes[("u1", "age")]
    # young: 1.0 + 0.8 = 1.8; abstain 2.0 x 0.2 = 0.4 -> young; evidence from the most confident supporter
    assert a["value"] == "young" and a["vote_share"] == pytest.approx(1.8 / 2.2) and a["evidence"] == "a0 young"
    assert a["mean_confidence"] == pytest.approx(4.5)
    # rationale: no sample names both winners (a0/a1 say male, b0 abstains on age), so it is composed from the
    # winners' evidence and cannot argue for a losing value
    assert g["rationale"] == "The log supports gender female, age young."
    u2 = votes[("u2", "gender")]
    assert u2["value"] == "female" and u2["valid"] == 1 and u2["samples"] == 2 and u2["single_value"] == "unknown"
    assert u2["single_confidence"] is None and u2["rationale"] == "only"


def test_rationale_comes_from_the_strongest_sample_that_names_every_winner() -> None:
    rows = [sample("u1", "a", 0, "male", 5, "young", 5, rationale="agrees, strong"),
            sample("u1", "a", 1, "male", 3, "young", 3, rationale="agrees, weak"),
            sample("u1", "a", 2, "female", 5, "young", 5, rationale="argues female")]  # fmt: skip
    votes = vote_samples(pa.Table.from_pylist(rows), TAXONOMY, "a").to_pylist()
    assert votes[0]["value"] == "male" and {r["rationale"] for r in votes} == {"agrees, strong"}


def test_current_samples_keeps_this_prompt_and_document_once() -> None:
    rows = [*SAMPLES, sample("u1", "a", 0, "male", 1, "old", 1, version="old-prompt"),
            sample("u2", "a", 1, "male", 1, "old", 1, chash="stale")]  # fmt: skip
    docs = pa.table({"user_id": ["u1", "u2"], "content_hash": ["h", "h"]})
    kept = current_samples(pa.Table.from_pylist(rows + rows[:1]), docs, "p1")
    assert kept.num_rows == 5
    assert sorted(zip(kept.column("user_id").to_pylist(), kept.column("sample").to_pylist(), strict=True)) == [
        ("u1", 0),
        ("u1", 0),
        ("u1", 1),
        ("u2", 0),
        ("u2", 1),
    ]  # u1 sample 0 of teachers a and b


def _calibrated():
    votes = vote_samples(pa.Table.from_pylist(SAMPLES), TAXONOMY, "a")
    levels = [5 if v != "unknown" else None for v in votes.column("value").to_pylist()]
    return votes.append_column("level", pa.array(levels, pa.int8()))


def test_sft_examples_are_student_format_chats() -> None:
    docs = pa.table({"user_id": ["u1", "u2"], "document": ["doc one", "doc two"]})
    sft, dropped = sft_examples(_calibrated(), docs, TAXONOMY, eval_percent=0, min_mean_level=0)
    assert dropped == 0 and sft.num_rows == 2 and set(sft.column("split").to_pylist()) == {"train"}
    row = sft.to_pylist()[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"] and "doc one" in row["messages"][1][
        "content"
    ]
    target = json.loads(row["messages"][2]["content"])
    assert list(target) == list(student_schema(TAXONOMY)["properties"])
    assert target["gender"] == {"value": "female", "level": 5, "evidence": "b0 female"}
    assert parse_student_output(row["messages"][2]["content"], TAXONOMY).error is None
    assert row["mean_level"] == 5.0
    _, dropped = sft_examples(_calibrated(), docs, TAXONOMY, eval_percent=0, min_mean_level=5.1)
    assert dropped == 2


def test_users_without_a_valid_judgement_get_no_sft_example() -> None:
    failed = [sample("u3", "a", 0, None, None, None, None, error="not_json")]
    votes = vote_samples(pa.Table.from_pylist(SAMPLES + failed), TAXONOMY, "a")
    votes = votes.append_column("level", pa.array([None] * votes.num_rows, pa.int8()))
    docs = pa.table({"user_id": ["u1", "u2", "u3"], "document": ["d1", "d2", "d3"]})
    sft, dropped = sft_examples(votes, docs, TAXONOMY, eval_percent=0, min_mean_level=0)
    assert dropped == 1 and "u3" not in sft.column("user_id").to_pylist()


def _decide(rows: dict[str, dict], easy: float = 5.0, noise: float = 1.5) -> str:
    """difficulties() of one user given as attribute -> vote row."""
    tax = taxonomy_from_dict({"name": "d", "attributes": [
        {"name": a, "description": a, "values": [{"name": "a", "definition": "a"}]} for a in rows]})  # fmt: skip
    votes = pa.Table.from_pylist([{"user_id": "u", "attribute": a, **r} for a, r in rows.items()])
    return str(difficulties(user_votes(votes, tax), easy, noise)[0])


def test_difficulty_filter_and_rl_rows() -> None:
    top = {"value": "a", "vote_share": 1.0, "mean_confidence": 5.0, "level": 5}
    assert _decide({"x": top, "y": top}) == "easy"
    assert _decide({"x": top, "y": {**top, "mean_confidence": 4.0}}) == "keep"
    low = {"value": "unknown", "vote_share": 0.7, "mean_confidence": 1.0, "level": None}
    assert _decide({"x": low, "y": {**low, "value": "a", "level": 1}}) == "noise"
    docs = pa.table({"user_id": ["u1", "u2"], "document": ["d1", "d2"]})
    rl, counts = rl_rows(_calibrated(), docs, TAXONOMY, 5.0, 1.5)
    # u2 is unanimous at confidence 5 on both attributes -> easy; u1 has split votes -> kept
    assert counts == {"keep": 1, "easy": 1, "noise": 0} and rl.column("user_id").to_pylist() == ["u1"]
    assert rl.column("gender_vote").to_pylist() == ["female"] and rl.column("age_vote_share")[0].as_py() > 0.8


def test_split_is_stable_and_near_the_share() -> None:
    users = [f"user{i}" for i in range(2000)]
    evals = [u for u in users if split_of(u, 10) == "eval"]
    assert 150 < len(evals) < 250 and evals == [u for u in users if split_of(u, 10) == "eval"]


def test_em_teacher_weights_follow_the_reliable_teacher() -> None:
    import random

    rng = random.Random(3)
    rows, truth = [], {}
    for i in range(300):
        uid = f"u{i:03d}"
        truth[uid] = rng.choice(["male", "female"])
        for teacher, p in (("good", 0.9), ("poor1", 0.55), ("poor2", 0.55)):
            for k in range(3):  # K = 3 samples per teacher, as labeling draws them
                g = truth[uid] if rng.random() < p else ({"male", "female"} - {truth[uid]}).pop()
                rows.append(sample(uid, teacher, k, g, 3, "young", 3))
    table = pa.Table.from_pylist(rows)
    reliability = teacher_reliability(table, TAXONOMY)
    gender = reliability["gender"]
    assert gender["good"]["accuracy"] == pytest.approx(0.9, abs=0.05)
    assert gender["poor1"]["accuracy"] == pytest.approx(0.55, abs=0.07) and gender["poor1"]["weight"] < 0.5
    assert gender["good"]["judgements"] == 900

    def accuracy(votes: pa.Table) -> float:
        rows = [r for r in votes.to_pylist() if r["attribute"] == "gender"]
        return sum(r["value"] == truth[r["user_id"]] for r in rows) / len(rows)

    fixed = accuracy(vote_samples(table, TAXONOMY, "good"))
    em = accuracy(vote_samples(table, TAXONOMY, "good", reliability=reliability))
    # fixed weights: the six poor samples often outvote the three good ones; EM gives the good teacher the say
    assert em > 0.93 and em > fixed + 0.05, (em, fixed)


def test_token_confidence_is_share_times_the_supporters_mean_token_probability() -> None:
    rows = [sample("u1", "a", 0, "male", 5, "young", 5), sample("u1", "a", 1, "male", 1, "young", 5),
            sample("u1", "a", 2, "female", 5, "unknown", 1)]  # fmt: skip
    for row, probs in zip(rows, ((0.9, 0.5), (0.7, None), (0.99, 0.8)), strict=True):
        row["gender_token_prob"], row["age_token_prob"] = probs
    votes = {r["attribute"]: r for r in vote_samples(pa.Table.from_pylist(rows), TAXONOMY, "a").to_pylist()}
    g, a = votes["gender"], votes["age"]
    # gender: male 1.0 + 0.2 against female 1.0 -> male (share 1.2 / 2.2), supporters' token probs 0.9, 0.7
    assert g["value"] == "male" and g["token_confidence"] == pytest.approx(1.2 / 2.2 * 0.8)
    # age: young 1.0 + 1.0, abstain 0.2; one supporter has no token prob: only the other counts
    assert a["token_confidence"] == pytest.approx(2.0 / 2.2 * 0.5)
    without = vote_samples(pa.Table.from_pylist(SAMPLES), TAXONOMY, "a")  # samples without the columns
    assert without.column("token_confidence").null_count == without.num_rows


def test_user_votes_pivot_and_mean_levels() -> None:
    rows = [{"user_id": "u2", "attribute": "age", "value": "old", "level": 4},
            {"user_id": "u1", "attribute": "gender", "value": "unknown", "level": None},
            {"user_id": "u1", "attribute": "age", "value": "young", "level": 2},
            {"user_id": "u2", "attribute": "other", "value": "x", "level": 5}]  # fmt: skip
    users = user_votes(pa.Table.from_pylist(rows), TAXONOMY)
    assert users.user_ids.to_pylist() == ["u1", "u2"]
    assert users.rows.tolist() == [[1, 2], [-1, 0]]  # rows of attributes outside the taxonomy are left out
    assert users.text("value", 1).to_pylist() == ["young", "old"] and users.text("value", 0).to_pylist()[1] is None
    # u1: abstention counts as level 1 -> (1 + 2) / 2; u2: only age present -> 4
    assert mean_levels(users).tolist() == [1.5, 4.0]


def test_sft_and_rl_sets_match_the_per_user_definitions_on_generated_samples() -> None:
    """The array version against the definitions it replaces, user by user: student_target and
    student_messages per user, the mean level over its rows, its first row's rationale."""
    from conf_profile.core.student import student_messages, student_target
    from conf_profile.core.taxonomy import load_taxonomy
    from conf_profile.synthetic.samples import teacher_samples_table

    tax = load_taxonomy()
    votes = vote_samples(teacher_samples_table(tax, 300, 3, teachers=2, seed=4), tax, "teacher0")
    levels = [None if v == "unknown" else 1 + i % 5 for i, v in enumerate(votes.column("value").to_pylist())]
    votes = votes.append_column("level", pa.array(levels, pa.int8()))
    ids = sorted(set(votes.column("user_id").to_pylist()))
    docs = pa.table({"user_id": ids[5:], "document": [f'log "{i}"\nline' for i in range(len(ids) - 5)]})
    by_user: dict[str, dict[str, dict]] = {}
    for row in votes.to_pylist():
        by_user.setdefault(row["user_id"], {})[row["attribute"]] = row
    sft, dropped = sft_examples(votes, docs, tax, eval_percent=20, min_mean_level=2.0)
    expected = []
    for uid, attrs in sorted(by_user.items()):
        level = sum(r["level"] if r["value"] != "unknown" and r["level"] else 1 for r in attrs.values()) / len(attrs)
        if level >= 2.0 and uid in docs.column("user_id").to_pylist():
            expected.append((uid, level, attrs))
    assert dropped == len(by_user) - len(expected) and sft.num_rows == len(expected) > 50
    doc_of = dict(zip(docs.column("user_id").to_pylist(), docs.column("document").to_pylist(), strict=True))
    for row, (uid, level, attrs) in zip(sft.to_pylist(), expected, strict=True):
        judgements = {a: (r["value"], r["level"] or 1, r["evidence"] or "") for a, r in attrs.items()}
        target = student_target(next(iter(attrs.values()))["rationale"], judgements, tax)
        assert row["user_id"] == uid and row["mean_level"] == round(level, 3) and row["split"] == split_of(uid, 20)
        assert row["messages"] == [*student_messages(tax, doc_of[uid]), {"role": "assistant", "content": target}]
    rl, counts = rl_rows(votes, docs, tax, 4.0, 2.0)
    assert sum(counts.values()) == len(by_user) and rl.num_rows <= counts["keep"]
    for row in rl.to_pylist():
        assert row["prompt"] == student_messages(tax, doc_of[row["user_id"]])
        assert row["gender_vote"] == by_user[row["user_id"]]["gender"]["value"]
