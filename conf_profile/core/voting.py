"""Confidence-weighted voting over teacher samples, per user x attribute, vectorized with numpy.

Each valid judgement votes for its value with weight ``teacher_weight * w(confidence)``; ``w`` is a table of
five weights, one per confidence level (default linear: c/5). ``unknown`` judgements are abstentions: their
weight is the abstain mass. The winner is the value with the largest mass; ties (within float rounding) go
to the value with more supporters, then to the value listed first in the taxonomy.

The user abstains only when no valid judgement names a value (every judgement abstained, or there is none).
Abstentions do not compete with one value for the win: they lower the vote share, and so the confidence, of
whatever value wins. Comparing the abstain mass with the winner's mass made the answer depend on K: with more
samples the value mass splits over values while the abstain mass does not, so more samples abstained more
and lowered coverage and F1 below a single sample. With this rule a vote over K samples answers whenever any
of them does (coverage 1 - p^K for a per-sample abstention rate p, never below a single sample's 1 - p), and
how much of the evidence abstained is what the confidence says: the risk-coverage curve, not a fixed rule,
decides where to stop answering.

Recorded per user x attribute: value, vote share (winning mass / total mass, abstentions included), mean
confidence of the supporters, samples valid / supporting, entropy (nats) of the mass over values and
abstention, and the raw confidence = share x mean supporter confidence / 5.

>>> votes = vote(users=[0, 0, 0], values=[0, 1, 0], confidences=[5, 5, 1], teacher_weights=[1.0, 1.0, 1.0],
...              n_users=1, n_values=3, unknown=2)
>>> int(votes.value[0]), round(float(votes.share[0]), 3), float(votes.mean_confidence[0])
(0, 0.545, 3.0)
>>> abstaining = vote(users=[0, 0, 0], values=[2, 2, 1], confidences=[5, 5, 2], teacher_weights=[1.0] * 3,
...                   n_users=1, n_values=3, unknown=2)
>>> int(abstaining.value[0]), round(float(abstaining.share[0]), 3)  # b answers, at a low share
(1, 0.167)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LINEAR_WEIGHTS = (0.2, 0.4, 0.6, 0.8, 1.0)  # w(c) = c / 5
UNIFORM_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)  # plain majority: every judgement counts the same


@dataclass(frozen=True)
class Votes:
    """Arrays of length n_users; ``value`` indexes the attribute's values (== unknown when abstaining)."""

    value: np.ndarray
    share: np.ndarray
    mean_confidence: np.ndarray  # of the supporters (NaN when nobody supports the result)
    valid: np.ndarray  # valid judgements (abstentions included)
    supporters: np.ndarray
    entropy: np.ndarray
    raw_confidence: np.ndarray
    mass: np.ndarray  # (n_users, n_values) weight mass per value, abstentions in the unknown column


def vote(
    users: Sequence[int] | np.ndarray,
    values: Sequence[int] | np.ndarray,
    confidences: Sequence[int] | np.ndarray,
    teacher_weights: Sequence[float] | np.ndarray,
    n_users: int,
    n_values: int,
    unknown: int,
    confidence_weights: Sequence[float] = LINEAR_WEIGHTS,
) -> Votes:
    """Vote over judgements given as parallel arrays (one entry per valid judgement)."""
    u, v = np.asarray(users, dtype=np.int64), np.asarray(values, dtype=np.int64)
    c = np.asarray(confidences, dtype=np.int64)
    if len(confidence_weights) != 5:
        raise ValueError(f"confidence_weights needs 5 entries (levels 1..5), got {len(confidence_weights)}")
    if c.size and (c.min() < 1 or c.max() > 5):
        raise ValueError("confidences must be integers 1..5")
    w = np.asarray(teacher_weights, dtype=np.float64) * np.asarray(confidence_weights, dtype=np.float64)[c - 1]
    cell = u * n_values + v
    size = n_users * n_values
    mass = np.bincount(cell, weights=w, minlength=size).astype(np.float64).reshape(n_users, n_values)
    count = np.bincount(cell, minlength=size).reshape(n_users, n_values)
    conf_sum = (
        np.bincount(cell, weights=c.astype(np.float64), minlength=size).astype(np.float64).reshape(n_users, n_values)
    )

    winner = _winner(mass, count, unknown)
    total = mass.sum(axis=1)
    rows = np.arange(n_users)
    named = count.sum(axis=1) - count[:, unknown]  # judgements that name a value
    value = np.where(named > 0, winner, unknown)
    # Rounded to 12 decimals: shares (and raw confidences) that differ only by the order of float sums are
    # one value, so the calibration's tie groups and any other implementation see the same numbers.
    share = np.round(np.divide(mass[rows, value], total, out=np.zeros(n_users), where=total > 0), 12)
    supporters = count[rows, value]
    mean_conf = np.divide(conf_sum[rows, value], supporters, out=np.full(n_users, np.nan), where=supporters > 0)
    return Votes(
        value=value,
        share=share,
        mean_confidence=mean_conf,
        valid=count.sum(axis=1),
        supporters=supporters,
        entropy=_entropy(mass, total),
        raw_confidence=np.round(np.nan_to_num(share * mean_conf / 5.0), 12),
        mass=mass,
    )


def _winner(mass: np.ndarray, count: np.ndarray, unknown: int) -> np.ndarray:
    """Index of the non-unknown value with the most mass; ties: more supporters, then taxonomy order."""
    known = mass.copy()
    known[:, unknown] = -np.inf
    best = known.max(axis=1, keepdims=True)
    tied = np.isclose(known, best, rtol=1e-9, atol=1e-12) & np.isfinite(known)
    # argmax returns the first maximum: among tied values, most supporters, then the earliest value.
    return np.argmax(np.where(tied, count, -1), axis=1)


def _entropy(mass: np.ndarray, total: np.ndarray) -> np.ndarray:
    p = np.divide(mass, total[:, None], out=np.zeros_like(mass), where=total[:, None] > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=1)


def strongest(users: np.ndarray, scores: np.ndarray, n_users: int) -> np.ndarray:
    """Per user, the position of its highest-scoring entry (first on ties; -1 for a user without entries).

    >>> strongest(np.array([1, 0, 1, 1]), np.array([0.2, 0.5, 0.9, 0.9]), 3).tolist()
    [1, 2, -1]
    """
    best = np.full(n_users, -1, dtype=np.int64)
    if users.size == 0:
        return best
    order = np.lexsort((np.arange(users.size), -scores, users))  # by user, score descending, position
    first = np.ones(order.size, dtype=bool)
    first[1:] = users[order][1:] != users[order][:-1]
    best[users[order][first]] = order[first]
    return best
