"""Confidence-weighted voting: hand-computed cases for weights, abstention, ties and the recorded fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conf_profile.core.voting import LINEAR_WEIGHTS, UNIFORM_WEIGHTS, strongest, vote

# values of a 3-value attribute: 0 = "a", 1 = "b", 2 = "unknown"
A, B, UNK = 0, 1, 2


def one_user(values, confidences, weights=None, confidence_weights=LINEAR_WEIGHTS):
    n = len(values)
    return vote([0] * n, values, confidences, weights or [1.0] * n, 1, 3, UNK, confidence_weights)


def test_confidence_outweighs_count() -> None:
    # two low-confidence votes for a (0.2 + 0.2) against one confident vote for b (1.0)
    v = one_user([A, A, B], [1, 1, 5])
    assert v.value[0] == B
    assert v.share[0] == pytest.approx(1.0 / 1.4)
    assert v.mean_confidence[0] == 5.0 and v.supporters[0] == 1 and v.valid[0] == 3
    assert v.raw_confidence[0] == pytest.approx((1.0 / 1.4) * 5 / 5)
    # the plain majority (uniform weights) picks a
    assert one_user([A, A, B], [1, 1, 5], confidence_weights=UNIFORM_WEIGHTS).value[0] == A


def test_teacher_weights_scale_votes() -> None:
    v = one_user([A, B], [5, 5], weights=[1.0, 3.0])
    assert v.value[0] == B and v.share[0] == pytest.approx(0.75)


def test_abstentions_add_to_total_mass_and_can_win() -> None:
    v = one_user([A, UNK, UNK], [4, 2, 2])  # a: 0.8, abstain: 0.8 -> abstain wins ties
    assert v.value[0] == UNK and v.share[0] == pytest.approx(0.5) and v.supporters[0] == 2
    v = one_user([A, UNK], [5, 2])  # a: 1.0, abstain 0.4
    assert v.value[0] == A and v.share[0] == pytest.approx(1.0 / 1.4)


def test_abstention_ties_survive_float_rounding() -> None:
    # a: 0.2 + 0.4 = 0.6000000000000001 in floating point; abstain: 0.6 -> a tie, so the user abstains
    assert one_user([A, A, UNK], [1, 2, 3]).value[0] == UNK


def test_ties_go_to_more_supporters_then_taxonomy_order() -> None:
    v = one_user([A, B, B], [4, 2, 2])  # 0.8 vs 0.4 + 0.4: tied mass, b has two supporters
    assert v.value[0] == B
    v = one_user([B, A], [3, 3])  # tied mass and supporters: the value listed first wins, whatever the order
    assert v.value[0] == A


def test_no_valid_judgement_abstains_with_zero_share() -> None:
    v = vote([], [], [], [], 2, 3, UNK)
    assert v.value.tolist() == [UNK, UNK] and v.share.tolist() == [0.0, 0.0]
    assert v.raw_confidence.tolist() == [0.0, 0.0] and v.valid.tolist() == [0, 0]


def test_entropy_in_nats() -> None:
    v = one_user([A, B], [5, 5])
    assert v.entropy[0] == pytest.approx(math.log(2))
    assert one_user([A, A], [3, 3]).entropy[0] == pytest.approx(0.0)


def test_many_users_at_once_match_one_by_one() -> None:
    rng = np.random.default_rng(0)
    users, values, conf = rng.integers(0, 50, 400), rng.integers(0, 3, 400), rng.integers(1, 6, 400)
    weights = rng.choice([0.5, 1.0], 400)
    together = vote(users, values, conf, weights, 50, 3, UNK)
    for u in range(50):
        mine = users == u
        alone = vote(np.zeros(mine.sum(), int), values[mine], conf[mine], weights[mine], 1, 3, UNK)
        assert together.value[u] == alone.value[0] and together.share[u] == pytest.approx(alone.share[0])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="1..5"):
        one_user([A], [6])
    with pytest.raises(ValueError, match="5 entries"):
        one_user([A], [3], confidence_weights=(1.0, 1.0))


def test_strongest_picks_highest_score_first_on_ties() -> None:
    users, scores = np.array([0, 0, 1, 1, 1]), np.array([0.5, 0.5, 0.1, 0.7, 0.3])
    assert strongest(users, scores, 3).tolist() == [0, 3, -1]
