"""Calibration: balanced equal-frequency levels on skewed input, rank order kept, isotonic fit, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conf_profile.core.calibration import (
    apply,
    fit_gold,
    fit_label_free,
    fit_levels,
    fit_levels_on_gold,
    isotonic,
    levels,
)


def test_levels_are_balanced_on_skewed_input() -> None:
    raw = np.random.default_rng(1).beta(8, 1.5, 1000)  # most raw confidences near 1
    lv = levels(fit_levels(raw), raw)
    counts = np.bincount(lv, minlength=6)[1:]
    assert counts.tolist() == [200] * 5


def test_rank_order_is_kept() -> None:
    raw = np.random.default_rng(2).random(300) ** 3
    lv = levels(fit_levels(raw), raw)
    order = np.argsort(raw)
    assert np.all(np.diff(lv[order]) >= 0)


def test_ties_are_never_split_and_a_constant_lands_in_the_middle() -> None:
    raw = np.array([0.2] * 6 + [0.9] * 4)
    lv = levels(fit_levels(raw), raw)
    assert set(lv[:6].tolist()) == {2} and set(lv[6:].tolist()) == {5}  # mid-ranks 0.3 and 0.8
    assert set(levels(fit_levels(np.full(50, 0.6)), np.full(50, 0.6)).tolist()) == {3}


def test_label_free_confidence_is_the_mean_of_each_level() -> None:
    raw = np.arange(1, 11) / 10.0
    cal = fit_label_free({"g": raw})
    assert cal["attributes"]["g"]["level_confidence"] == pytest.approx([0.15, 0.35, 0.55, 0.75, 0.95])
    lv, conf = apply(cal, "g", np.array([0.05, 0.5, 0.99]))
    assert lv.tolist() == [1, 3, 5] and conf.tolist() == pytest.approx([0.15, 0.55, 0.95])


def test_reuse_without_refit_gives_the_same_mapping(tmp_path) -> None:
    raw = np.random.default_rng(3).random(200)
    cal = fit_label_free({"g": raw})
    (tmp_path / "calibration.json").write_text(json.dumps(cal))
    loaded = json.loads((tmp_path / "calibration.json").read_text())
    new = np.random.default_rng(4).random(50)  # a later run's values: mapped, not refitted
    assert np.array_equal(apply(loaded, "g", new)[0], apply(cal, "g", new)[0])
    assert np.allclose(apply(loaded, "g", new)[1], apply(cal, "g", new)[1])
    with pytest.raises(KeyError, match="no attribute"):
        apply(loaded, "age", new)


def test_isotonic_pools_violators_and_ties() -> None:
    x, y = isotonic(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), np.array([0, 1, 0, 1, 1]))
    assert x.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5] and y.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    x, y = isotonic(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 0]))  # tied x share one value
    assert x.tolist() == [0.2, 0.5] and y.tolist() == [0.0, 0.5]


def test_gold_fit_maps_raw_confidence_to_accuracy() -> None:
    rng = np.random.default_rng(5)
    raw = rng.random(2000)
    correct = (rng.random(2000) < raw**2).astype(float)  # true accuracy = raw^2: raw is over-confident
    cal = fit_gold({"g": raw}, {"g": raw}, {"g": correct})
    _, conf = apply(cal, "g", np.array([0.3, 0.9]))
    assert cal["method"] == "isotonic" and conf == pytest.approx([0.09, 0.81], abs=0.08)


def test_gold_fit_gives_each_level_its_fitted_confidence() -> None:
    # levels of 0.1..1.0 are pairs; the gold says the lower half is always wrong, the upper half always right
    raw = np.arange(1, 11) / 10.0
    cal = fit_gold({"g": raw}, {"g": raw}, {"g": (raw > 0.5).astype(float)})
    assert cal["attributes"]["g"]["level_confidence"] == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    from conf_profile.core.profiles import level_confidence

    assert [level_confidence(cal, "g", k) for k in (1, 3, 5)] == [0.0, 0.5, 1.0]  # what the profile tables write


def test_weighted_isotonic_pools_by_weight() -> None:
    # 0.9 (weight 1) then 0.3 (weight 3) violate: pooled (0.9 + 0.9) / 4 = 0.45
    xs, ys = isotonic(np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.9, 0.3]), np.array([1.0, 1.0, 3.0]))
    assert xs.tolist() == [1.0, 2.0, 3.0] and np.allclose(ys, [0.2, 0.45, 0.45])


def test_student_levels_refitted_on_gold_shrink_towards_the_attributes_accuracy() -> None:
    # levels 2 (4 answers, 3 right) and 4 (2 answers, 0 right); accuracy 0.5; prior 2 pseudo-answers:
    # level 2: (3 + 1) / 6 = 0.6667; level 4: (0 + 1) / 4 = 0.25 -> violates: pooled by weight
    # (0.6667 x 6 + 0.25 x 4) / 10 = 0.5 for both, and flat over levels 1..5
    base = {"method": "label_free", "attributes": {"gender": {"thresholds": [0.1, 0.2, 0.3, 0.4],
                                                              "level_confidence": [0.1, 0.3, 0.5, 0.7, 0.9]},
                                                   "age_group": {"level_confidence": [0.2] * 5}}}  # fmt: skip
    lv, right = np.array([2, 2, 2, 2, 4, 4]), np.array([1, 1, 1, 0, 0, 0])
    cal = fit_levels_on_gold(base, {"gender": lv}, {"gender": right}, "rl", prior=2.0)
    assert cal["attributes"]["gender"]["level_confidence"] == [0.5] * 5
    assert cal["attributes"]["gender"]["student_gold"]["answers"] == [0, 4, 0, 2, 0]
    assert cal["attributes"]["gender"]["thresholds"] == [0.1, 0.2, 0.3, 0.4]  # the base is kept
    assert cal["attributes"]["age_group"]["level_confidence"] == [0.2] * 5  # no gold answers: unchanged
    assert cal["method"] == "label_free+student_gold" and cal["fitted_for"] == "rl"
    assert base["attributes"]["gender"]["level_confidence"] == [0.1, 0.3, 0.5, 0.7, 0.9]  # not mutated
    # increasing accuracy with the level, no prior: each level its own accuracy, interpolated between
    lv, right = np.array([1, 1, 3, 3, 3, 3]), np.array([0, 1, 1, 1, 1, 0])
    cal = fit_levels_on_gold(None, {"gender": lv}, {"gender": right}, "sft", prior=0.0)
    assert cal["attributes"]["gender"]["level_confidence"] == [0.5, 0.625, 0.75, 0.75, 0.75]
    assert cal["method"] == "none+student_gold"
