"""Label-free teacher reliability: one-coin Dawid-Skene EM over the teachers' judgements, per attribute.

The model: a user's attribute has one true value out of L; teacher t names it with probability p_t and
otherwise one of the other L - 1 values uniformly. EM alternates the posterior over each user's true value
(given the p_t) and the p_t (given the posteriors), starting from the plain majority. Every sample of a
teacher is one observation; abstentions (``unknown``) are not observations. The samples of one teacher are
taken as independent, so a teacher that repeats itself looks reliable: the estimate needs three or more
teachers that make their own mistakes (with one observation per teacher and user, EM on a weakly informative
binary panel falls to the uninformative fixed point, every p_t = 1/2). A Beta(1, 1) prior keeps the
estimates off 0 and 1 for teachers with few judgements.

The weight that makes a weighted vote the maximum-likelihood answer under this model is the log-odds of a
teacher being right against naming one particular wrong value, log(p_t (L - 1) / (1 - p_t)); a teacher no
better than chance (p_t <= 1 / L) gets weight 0.

>>> items, workers = [0, 1, 2, 3] * 3, [0] * 4 + [1] * 4 + [2] * 4
>>> acc, _ = one_coin(items, workers, [0, 1, 0, 1] * 2 + [0, 1, 0, 0], n_items=4, n_workers=3, n_classes=2)
>>> [round(a, 2) for a in acc.tolist()]  # worker 2 disagrees with the other two on item 3
[0.8, 0.8, 0.67]
>>> vote_weight(np.array([0.5, 0.9]), n_classes=2).round(3).tolist()
[0.0, 2.197]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def one_coin(
    items: Sequence[int] | np.ndarray,
    workers: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    n_items: int,
    n_workers: int,
    n_classes: int,
    iterations: int = 100,
    tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy per worker, posterior (n_items, n_classes)) from parallel arrays of observations."""
    i, w, y = (np.asarray(x, dtype=np.int64) for x in (items, workers, labels))
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be class indices 0..{n_classes - 1}")
    cell = i * n_classes + y
    counts = np.bincount(cell, minlength=n_items * n_classes).reshape(n_items, n_classes)
    post = _normalize(counts + 1e-9)  # the plain majority (uniform where nobody answered: such an item ends at
    # the class prior)
    total = np.bincount(w, minlength=n_workers).astype(np.float64)
    accuracy = np.full(n_workers, 0.5)
    for _ in range(iterations):
        agree = np.bincount(w, weights=post[i, y], minlength=n_workers)
        new = (agree + 1.0) / (total + 2.0)  # Beta(1, 1) prior
        prior = post.mean(axis=0) if n_items else np.full(n_classes, 1.0 / n_classes)
        gain = np.log(new) - np.log((1.0 - new) / max(1, n_classes - 1))  # log-odds right vs one wrong value
        log_post = np.log(prior + 1e-12)[None, :] + np.bincount(
            cell, weights=gain[w], minlength=n_items * n_classes
        ).reshape(n_items, n_classes)
        post = _normalize(np.exp(log_post - log_post.max(axis=1, keepdims=True)))
        done = np.max(np.abs(new - accuracy)) < tol
        accuracy = new
        if done:
            break
    return accuracy, post


def vote_weight(accuracy: np.ndarray, n_classes: int) -> np.ndarray:
    """log(p (L - 1) / (1 - p)), at least 0 (a teacher at or below chance does not vote)."""
    p = np.clip(np.asarray(accuracy, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.maximum(0.0, np.log(p * max(1, n_classes - 1) / (1.0 - p)))


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / x.sum(axis=1, keepdims=True)
