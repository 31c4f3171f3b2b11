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


def test_abstentions_lower_the_share_but_never_outvote_a_value() -> None:
    v = one_user([A, UNK, UNK], [4, 2, 2])  # a: 0.8, abstain: 0.8 -> a answers at share 0.5
    assert v.value[0] == A and v.share[0] == pytest.approx(0.5) and v.supporters[0] == 1
    assert v.raw_confidence[0] == pytest.approx(0.5 * 4 / 5)
    v = one_user([A, UNK, UNK, UNK], [1, 5, 5, 5])  # a: 0.2 against 3.0 abstaining -> a, share 0.2 / 3.2
    assert v.value[0] == A and v.share[0] == pytest.approx(0.2 / 3.2)
    v = one_user([UNK, UNK], [5, 1])  # nobody names a value: the user abstains, the share is the abstain mass
    assert v.value[0] == UNK and v.share[0] == pytest.approx(1.0) and v.supporters[0] == 2


def test_more_samples_never_answer_less() -> None:
    # Every user has the same per-sample behaviour: abstain with probability 0.8, else a (0.15) or b (0.05).
    rng = np.random.default_rng(0)
    n = 4000
    coverage = []
    for k in (1, 3, 5):
        users = np.repeat(np.arange(n), k)
        values = rng.choice([A, B, UNK], size=n * k, p=[0.15, 0.05, 0.8])
        v = vote(users, values, rng.integers(1, 6, n * k), np.ones(n * k), n, 3, UNK)
        coverage.append(float(np.mean(v.value != UNK)))
    # expected 1 - 0.8^k: 0.2, 0.488, 0.672
    assert coverage == pytest.approx([0.2, 0.488, 0.672], abs=0.03)
    assert coverage[0] < coverage[1] < coverage[2]


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
