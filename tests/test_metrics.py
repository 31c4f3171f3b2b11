"""Evaluation metrics: hand-computed cases and scikit-learn where the definitions coincide."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, confusion_matrix

from conf_profile.core.metrics import attribute_metrics, brier, confusion, coverage_by_level, ece, macro, reliability

LABELS = ("a", "b", "c", "unknown")


def test_abstention_lowers_recall_not_precision() -> None:
    truth = ["a", "b", "c", "a", "b"]
    pred = ["a", "b", "unknown", "unknown", "a"]
    m = attribute_metrics(truth, pred, [0.9, 0.8, None, None, 0.6], [5, 4, None, None, 2], LABELS)
    assert (m["answered"], m["correct"], m["users"]) == (3, 2, 5)
    assert m["precision"] == pytest.approx(2 / 3, abs=1e-4) and m["recall"] == pytest.approx(0.4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.4 / (2 / 3 + 0.4), abs=1e-4)
    assert m["coverage"] == pytest.approx(0.6)
    # level >= 4 keeps the two confident answers, both right
    assert m["by_level"][3] == {"min_level": 4, "coverage": 0.4, "precision": 1.0, "users": 2}


def test_users_without_truth_are_left_out() -> None:
    m = attribute_metrics(["a", None], ["a", "b"], [1.0, 1.0], [5, 5], LABELS)
    assert m["users"] == 1 and m["precision"] == 1.0


def test_without_abstention_precision_and_recall_equal_accuracy() -> None:
    rng = np.random.default_rng(0)
    truth, pred = rng.choice(["a", "b", "c"], 200), rng.choice(["a", "b", "c"], 200)
    m = attribute_metrics(truth.tolist(), pred.tolist(), [0.5] * 200, [3] * 200, LABELS)
    assert m["precision"] == m["recall"] == pytest.approx(accuracy_score(truth, pred), abs=1e-4)


def test_confusion_matches_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    truth, pred = rng.choice(["a", "b", "c"], 100), rng.choice(["a", "b", "c", "unknown"], 100)
    ours = confusion(truth, pred, LABELS)
    assert np.array_equal(ours, confusion_matrix(truth, pred, labels=list(LABELS)))


def test_brier_matches_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    conf, correct = rng.random(300), rng.integers(0, 2, 300)
    assert brier(conf, correct) == pytest.approx(brier_score_loss(correct, conf))


def test_ece_hand_computed_and_perfect_calibration() -> None:
    # bin 9: conf 0.95 x2, accuracy 0.5 -> gap 0.45 x 2/4; bin 3: conf 0.35 x2, accuracy 0.5 -> gap 0.15 x 2/4
    assert ece(np.array([0.95, 0.95, 0.35, 0.35]), np.array([1, 0, 1, 0])) == pytest.approx(0.3)
    assert ece(np.array([1.0, 1.0, 0.0]), np.array([1, 1, 0])) == pytest.approx(0.0)
    points = reliability(np.array([0.95, 0.95, 0.35]), np.array([1, 0, 1]))
    assert [(p["bin"], p["count"], p["accuracy"]) for p in points] == [(3, 1, 1.0), (9, 2, 0.5)]


def test_coverage_by_level_counts_only_answered() -> None:
    rows = coverage_by_level(np.array([1, 3, 5, 0]), np.array([True, True, True, False]),
                             np.array([False, True, True, False]))  # fmt: skip
    assert [r["users"] for r in rows] == [3, 2, 2, 1, 1]
    assert rows[0]["precision"] == pytest.approx(2 / 3, abs=1e-4) and rows[4]["coverage"] == 0.25


def test_macro_averages_attributes_and_skips_missing() -> None:
    per = {"x": {"f1": 0.5, "precision": 1.0, "recall": 0.2, "coverage": 0.2, "ece": None, "brier": 0.1},
           "y": {"f1": 0.7, "precision": 0.5, "recall": 0.6, "coverage": 1.0, "ece": 0.2, "brier": 0.3}}  # fmt: skip
    out = macro(per)
    assert out["f1"] == 0.6 and out["ece"] == 0.2 and out["brier"] == 0.2
