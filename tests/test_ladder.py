"""The stage ladder: F1 with abstention as a miss, AURC with ties and abstentions, paired bootstrap CIs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conf_profile.core.ladder import (
    AttributeScores,
    align,
    aurc,
    bootstrap_weights,
    coverage,
    f1,
    interval,
    ladder,
    macro_f1,
)


def test_f1_counts_abstentions_and_missing_users_as_misses() -> None:
    truth = {"a": "x", "b": "y", "c": "x", "d": None}
    s = align(["a", "b", "c", "d"], truth, {"a": ("x", 0.9), "b": ("x", 0.5), "d": ("x", 0.5)})
    # with truth: a, b, c; answered a, b (d has no truth, c no prediction); correct a
    assert s.answered.tolist() == [True, True, False, False] and s.correct.tolist() == [True, False, False, False]
    precision, recall = 1 / 2, 1 / 3
    assert f1(s) == pytest.approx(2 * precision * recall / (precision + recall))


def test_aurc_without_ties_is_the_mean_risk_over_coverage() -> None:
    # sorted by confidence: right, right, wrong -> risks 0, 0, 1/3
    assert aurc(np.array([0.3, 0.9, 0.6]), np.array([False, True, True])) == pytest.approx(1 / 9)
    assert aurc(np.array([0.9, 0.8]), np.array([True, True])) == 0.0
    assert aurc(np.array([np.nan, np.nan]), np.array([False, False])) == 1.0  # abstained on everyone


def test_aurc_with_ties_is_the_expectation_over_their_orders() -> None:
    conf = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    correct = np.array([True, True, False, False, True])
    expected = []
    for order in itertools.permutations([1, 2, 3]):
        c = correct[[0, *order, 4]]
        expected.append(np.mean(np.cumsum(~c) / np.arange(1, 6)))
    assert aurc(conf, correct) == pytest.approx(np.mean(expected))


def test_a_better_ranking_has_a_lower_aurc_at_the_same_accuracy() -> None:
    correct = np.array([True, True, False, False])
    assert aurc(np.array([0.9, 0.8, 0.2, 0.1]), correct) < aurc(np.array([0.1, 0.2, 0.8, 0.9]), correct)
    # a constant confidence sits between the two (every order equally likely)
    assert aurc(np.array([0.9, 0.8, 0.2, 0.1]), correct) < aurc(np.full(4, 0.5), correct)


def test_bootstrap_weights_resample_every_user_count() -> None:
    w = bootstrap_weights(50, 200, seed=1)
    assert w.shape == (200, 50) and np.all(w.sum(axis=1) == 50)
    assert np.array_equal(w, bootstrap_weights(50, 200, seed=1))
    s = align([str(i) for i in range(50)], {str(i): "x" for i in range(50)},
              {str(i): ("x" if i % 2 else "y", 1.0) for i in range(50)})  # fmt: skip
    # F1 of the full sample = 0.5; resampled F1s centre on it
    assert f1(s) == 0.5 and abs(float(np.mean(f1(s, w))) - 0.5) < 0.03


def _stage(rng: np.random.Generator, n: int, accuracy: float) -> list[AttributeScores]:
    right = rng.random(n) < accuracy
    confidence = np.where(right, 0.9, 0.1) + rng.random(n) * 0.01
    return [AttributeScores(np.ones(n, bool), np.ones(n, bool), right, confidence)]


def test_ladder_finds_a_real_difference_and_not_a_null_one() -> None:
    rng = np.random.default_rng(0)
    n = 400
    stages = {"majority": _stage(rng, n, 0.4), "same": _stage(rng, n, 0.4), "better": _stage(rng, n, 0.7)}
    out = ladder(stages, reference="majority", resamples=300, seed=0)
    better = out["better"]["vs_reference"]["f1"]
    assert better["low"] > 0 and better["low"] <= better["diff"] <= better["high"]
    same = out["same"]["vs_reference"]["f1"]
    assert same["low"] < 0 < same["high"]  # two draws of one accuracy: the interval covers 0
    assert out["better"]["vs_previous"]["stage"] == "same" and "vs_previous" not in out["majority"]
    assert "vs_reference" not in out["majority"] and out["better"]["users"] == n
    assert out["better"]["aurc"] < out["same"]["aurc"]  # confident where right: a lower AURC
    assert out["better"]["vs_reference"]["aurc"]["high"] < 0


def test_macro_is_the_mean_over_attributes_and_interval_is_percentile() -> None:
    rng = np.random.default_rng(2)
    a, b = _stage(rng, 100, 0.3), _stage(rng, 100, 0.9)
    assert macro_f1([a[0], b[0]]) == pytest.approx((f1(a[0]) + f1(b[0])) / 2)
    assert interval(np.array([]), 0.1) == {"diff": 0.1, "low": 0.1, "high": 0.1}


def test_coverage_is_the_answered_share_of_users_with_truth_averaged_over_attributes() -> None:
    truth = {"a": "x", "b": "y", "c": "x", "d": None}
    # answered a, b and d; d has no truth (not counted): 2 of 3 users with truth
    first = align(["a", "b", "c", "d"], truth, {"a": ("x", 0.9), "b": ("x", 0.5), "d": ("y", 0.5)})
    second = align(["a", "b", "c", "d"], truth, {"c": ("unknown", None)})  # an abstention is not an answer
    nobody = align(["a"], {"a": None}, {"a": ("x", 0.9)})  # an attribute without truth is left out
    assert coverage([first]) == pytest.approx(2 / 3)
    assert coverage([first, second, nobody]) == pytest.approx((2 / 3 + 0) / 2)
    assert coverage([]) == 0.0
