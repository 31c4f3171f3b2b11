"""GRPO rewards on hand-computed groups: agreement, split votes, abstentions, malformed outputs,
confidence-weighted tie-breaks, the teacher as an extra voter, and the TRL signature."""

from __future__ import annotations

import json

import pytest

from conf_profile.core.rewards import RewardSettings, reward_functions, reward_weights, score_rollouts
from conf_profile.core.taxonomy import taxonomy_from_dict

TAX = taxonomy_from_dict({"name": "t", "attributes": [
    {"name": "g", "description": "g", "values": [{"name": "m", "definition": "m"}, {"name": "f", "definition": "f"}]},
    {"name": "a", "description": "a", "values": [{"name": "y", "definition": "y"}, {"name": "o", "definition": "o"}]},
]})  # fmt: skip


def out(g: tuple[str, int], a: tuple[str, int]) -> list[dict[str, str]]:
    """A conversational completion in the student format."""
    body = {"rationale": "r", "g": {"value": g[0], "level": g[1], "evidence": ""},
            "a": {"value": a[0], "level": a[1], "evidence": ""}}  # fmt: skip
    return [{"role": "assistant", "content": json.dumps(body)}]


def score(completions, users=None, votes=None, shares=None, **settings):
    users = users or ["u"] * len(completions)
    return score_rollouts(completions, users, votes or {}, shares or {}, TAX, RewardSettings(**settings))


def test_all_agree_at_top_level_gets_full_reward() -> None:
    s = score([out(("m", 5), ("y", 5))] * 4)
    assert s.format_ok == [1.0] * 4 and s.accuracy == [1.0] * 4 and s.calibration == [1.0] * 4


def test_split_votes_weight_attributes_by_vote_share() -> None:
    # g: m (5, 5) vs f (5, 5): mass 2.0 each, tie on supporters -> m (listed first), share 0.5
    # a: all four say y at level 5 -> share 1.0
    group = [out(("m", 5), ("y", 5)), out(("m", 5), ("y", 5)), out(("f", 5), ("y", 5)), out(("f", 5), ("y", 5))]
    s = score(group)
    assert s.accuracy[:2] == [1.0, 1.0]
    assert s.accuracy[2:] == pytest.approx([1.0 / 1.5] * 2)  # only a agrees: 1.0 / (0.5 + 1.0)
    # calibration: f-voters stated 1.0 on a wrong g and on a right a -> Brier (1 + 0) / 2
    assert s.calibration[2:] == pytest.approx([0.5, 0.5])


def test_confidence_breaks_what_counting_would_not() -> None:
    # g: two votes for f at level 1 (0.4) against one for m at level 5 (1.0) -> m, share 1/1.4
    group = [out(("f", 1), ("y", 3)), out(("f", 1), ("y", 3)), out(("m", 5), ("y", 3))]
    s = score(group)
    assert s.accuracy[2] == pytest.approx(1.0)
    assert s.accuracy[0] == pytest.approx(1.0 / (1 / 1.4 + 1.0))


def test_one_named_value_outweighs_a_group_abstention() -> None:
    group = [out(("unknown", 1), ("y", 2)), out(("unknown", 1), ("y", 2)), out(("m", 1), ("y", 2))]
    s = score(group)
    # g: m (0.2) against abstain mass 0.4 -> pseudo-label m at share 0.2 / 0.6; a: y at share 1
    assert s.accuracy[0] == pytest.approx((0 + 1.0) / (1 / 3 + 1.0)) and s.accuracy[2] == pytest.approx(1.0)
    # calibration over {answered} | {a value on the table} = {g, a}: rollout 0 answered only a (0.4, right)
    assert s.calibration[0] == pytest.approx((1.0 - 0.6**2) / 2)
    assert s.calibration[2] == pytest.approx(((1.0 - 0.8**2) + (1.0 - 0.6**2)) / 2)


def test_a_rollout_that_answers_nothing_earns_no_calibration_where_values_are_on_the_table() -> None:
    s = score([out(("unknown", 1), ("unknown", 1)), out(("m", 1), ("y", 1))])
    # the group's only named values win: g -> m, a -> y (share 0.5 each)
    assert s.accuracy == pytest.approx([0.0, 1.0])
    assert s.calibration[0] == 0.0 and s.calibration[1] == pytest.approx(1.0 - 0.8**2)
    nothing = score([out(("unknown", 1), ("unknown", 1))] * 2)  # nobody names anything: abstaining is right
    assert nothing.accuracy == [1.0, 1.0] and nothing.calibration == [1.0, 1.0]


def reward(scores, k: int, calibration_weight: float = 0.5) -> float:
    return scores.format_ok[k] * (scores.accuracy[k] + calibration_weight * scores.calibration[k])


def test_an_all_unknown_group_scores_below_a_group_that_agrees_with_the_teacher() -> None:
    votes, shares = {"g": ["f"] * 4, "a": ["o"] * 4}, {"g": [0.8] * 4, "a": [0.6] * 4}
    silent = [out(("unknown", 1), ("unknown", 1))] * 4
    agreeing = [out(("f", 4), ("o", 4))] * 4
    for weight in (1.0, 0.0):  # the teacher voting, and the teacher only known (no vote weight)
        s_silent = score(silent, votes=votes, shares=shares, teacher_voter_weight=weight)
        s_agree = score(agreeing, votes=votes, shares=shares, teacher_voter_weight=weight)
        assert [reward(s_silent, k) for k in range(4)] == [0.0] * 4
        assert reward(s_agree, 0) == pytest.approx(1.0 + 0.5 * (1.0 - 0.2**2))
        assert reward(s_agree, 0) > reward(s_silent, 0)
    # with the teacher voting, the pseudo-label is its value: f at 0.8 / (0.8 + 4 x 0.2)
    assert score(silent, votes=votes, shares=shares).teacher_agreement == [1.0] * 4


def test_malformed_outputs_get_nothing_and_do_not_vote() -> None:
    group = ["not json", [{"role": "assistant", "content": '{"g": {"value": "x"}}'}], out(("f", 2), ("o", 2))]
    s = score(group)
    assert s.format_ok == [0.0, 0.0, 1.0] and s.accuracy[:2] == [0.0, 0.0] and s.calibration[:2] == [0.0, 0.0]
    assert s.accuracy[2] == 1.0  # the only valid rollout decides the pseudo-labels


def test_groups_are_scored_separately() -> None:
    s = score([out(("m", 5), ("y", 5)), out(("f", 5), ("o", 5))], users=["u1", "u2"])
    assert s.accuracy == [1.0, 1.0]


def test_teacher_vote_as_an_extra_voter_and_agreement() -> None:
    group = [out(("m", 2), ("y", 2)), out(("f", 2), ("y", 2))]  # g tied 0.4 : 0.4 on its own -> m
    votes, shares = {"g": ["f", "f"], "a": ["o", "o"]}, {"g": [0.9, 0.9], "a": [0.6, 0.6]}
    alone = score(group, votes=votes, shares=shares, teacher_voter_weight=0.0)
    assert alone.accuracy[0] == pytest.approx(1.0) and alone.teacher_agreement == [0.0, 0.0]
    # with weight 1, the teacher adds 0.9 to f (g -> f) and 0.6 to o (a stays y: 0.8 > 0.6)
    joined = score(group, votes=votes, shares=shares, teacher_voter_weight=1.0)
    assert joined.accuracy[1] == pytest.approx(1.0) and joined.teacher_agreement == [0.5, 0.5]


def test_trl_signature_and_weights() -> None:
    funcs = reward_functions(TAX, RewardSettings(calibration_weight=0.3))
    assert [f.__name__ for f in funcs] == ["format_gate", "accuracy", "calibration", "teacher_agreement"]
    completions = [out(("m", 5), ("y", 5)), "broken"]
    columns = {"user_id": ["u", "u"], "g_vote": ["m", "m"], "g_vote_share": [1.0, 1.0], "trainer_state": None}
    assert funcs[0](["p", "p"], completions, **columns) == [1.0, 0.0]
    assert funcs[3](["p", "p"], completions, **columns) == [1.0, 1.0]
    assert reward_weights(RewardSettings(calibration_weight=0.3)) == [0.0, 1.0, 0.3, 0.0]


def test_the_four_functions_score_a_batch_once(monkeypatch) -> None:
    from conf_profile.core import rewards

    calls = []
    real = rewards.score_rollouts
    monkeypatch.setattr(rewards, "score_rollouts", lambda *a, **k: calls.append(1) or real(*a, **k))
    funcs = reward_functions(TAX, RewardSettings())
    batch = [out(("m", 5), ("y", 4)), out(("f", 2), ("y", 4))]
    columns = {"user_id": ["u", "u"], "g_vote": ["m", "m"], "g_vote_share": [1.0, 1.0]}
    first = [f(None, batch, **columns) for f in funcs]  # as TRL calls them: the same objects each time
    assert len(calls) == 1
    assert first[1] == score(batch, votes={"g": ["m", "m"]}, shares={"g": [1.0, 1.0]}).accuracy
    new_votes = {**columns, "g_vote": ["f", "f"]}
    funcs[1](None, batch, **new_votes)  # new columns: scored anew, then shared again
    funcs[2](None, batch, **new_votes)
    assert len(calls) == 2
    funcs[1](None, list(batch), **new_votes)  # a new batch, even one with equal content
    assert len(calls) == 3
