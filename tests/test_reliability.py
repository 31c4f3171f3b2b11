"""One-coin EM over teachers: recovers known accuracies of a simulated panel, and its vote weights beat the
plain majority there."""

from __future__ import annotations

import numpy as np
import pytest

from conf_profile.core.reliability import one_coin, vote_weight


def panel(accuracies: list[float], n_items: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    items, workers, labels = [], [], []
    for w, p in enumerate(accuracies):
        right = rng.random(n_items) < p
        wrong = (truth + rng.integers(1, n_classes, n_items)) % n_classes  # uniform over the other values
        items.append(np.arange(n_items))
        workers.append(np.full(n_items, w))
        labels.append(np.where(right, truth, wrong))
    return truth, np.concatenate(items), np.concatenate(workers), np.concatenate(labels)


def test_recovers_the_accuracies_of_a_simulated_panel() -> None:
    accuracies = [0.85, 0.7, 0.55, 0.4, 0.3]
    truth, i, w, y = panel(accuracies, n_items=3000, n_classes=4, seed=0)
    estimated, post = one_coin(i, w, y, 3000, 5, 4)
    assert estimated == pytest.approx(accuracies, abs=0.03)
    assert post.shape == (3000, 4) and np.allclose(post.sum(axis=1), 1.0)


def test_em_weights_beat_the_plain_majority_on_a_panel_with_one_good_teacher() -> None:
    truth, i, w, y = panel([0.9, 0.35, 0.35, 0.35], n_items=3000, n_classes=4, seed=1)
    estimated, _ = one_coin(i, w, y, 3000, 4, 4)
    weights = vote_weight(estimated, 4)
    scores = np.zeros((3000, 4))
    np.add.at(scores, (i, y), weights[w])
    majority = np.zeros((3000, 4))
    np.add.at(majority, (i, y), 1.0)
    assert np.mean(scores.argmax(axis=1) == truth) > np.mean(majority.argmax(axis=1) == truth) + 0.1
    assert weights[0] > 2 * weights[1] > 0


def test_items_without_observations_and_chance_teachers() -> None:
    acc, post = one_coin([0, 0, 2, 2], [0, 1, 0, 1], [1, 1, 2, 2], n_items=3, n_workers=2, n_classes=3)
    # nobody answered item 1: it takes the class prior (the mean posterior), no value of its own
    assert post[1] == pytest.approx(post.mean(axis=0), abs=0.05) and post[1][0] < 0.05
    assert acc[0] == pytest.approx(acc[1])
    assert vote_weight(np.array([1 / 3, 0.2]), 3).tolist() == [0.0, 0.0]  # at or below chance: no vote
    with pytest.raises(ValueError, match="class indices"):
        one_coin([0], [0], [3], 1, 1, 3)
