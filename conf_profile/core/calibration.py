"""Confidence calibration of vote confidences: levels 1-5 and a confidence in 0..1, per attribute.

Label-free (default): equal-frequency levels fitted on this run's raw confidences. Each distinct raw value
takes the level of its mid-rank (a tie group is never split, so rank order is kept and a degenerate
distribution lands in the middle level instead of the top one); the stored thresholds are the smallest raw
value of each level 2..5. The confidence of a level is the mean raw confidence of its members.
With a gold set: the confidence is an isotonic (pool-adjacent-violators) fit of correctness on raw
confidence; the levels stay equal-frequency, and the confidence of a level becomes the mean fitted
confidence of its members, so that what states only a level (the student) gets the gold-fitted confidence
too, not the raw one.

A student's calibrator (``fit_levels_on_gold``): the student states only a level, so with a gold set the
confidence of each of its levels is refitted on its own answers for the gold users (jobs.infer --gold).

A fitted calibrator is a plain dict (calibration.json) that later runs apply without refitting.

>>> cal = fit_label_free({"gender": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])})
>>> apply(cal, "gender", np.array([0.1, 0.35, 1.0]))[0].tolist()
[1, 2, 5]
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

LEVELS = 5


def fit_levels(raw: np.ndarray) -> list[float | None]:
    """Thresholds (smallest raw value of levels 2..5; None where a level is empty at the top)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.size == 0:
        return [None] * (LEVELS - 1)
    distinct, counts = np.unique(raw, return_counts=True)
    below = np.cumsum(counts) - counts
    midrank = (below + counts / 2.0) / raw.size
    level = np.minimum(LEVELS, 1 + np.floor(LEVELS * midrank).astype(np.int64))
    thresholds: list[float | None] = []
    for lv in range(2, LEVELS + 1):
        at_or_above = distinct[level >= lv]
        thresholds.append(float(at_or_above[0]) if at_or_above.size else None)
    return thresholds


def levels(thresholds: list[float | None], raw: np.ndarray) -> np.ndarray:
    """Level 1..5 of each raw confidence under the stored thresholds."""
    t = np.array([np.inf if x is None else x for x in thresholds], dtype=np.float64)
    return 1 + np.searchsorted(t, np.asarray(raw, dtype=np.float64), side="right")


def fit_label_free(raw_by_attribute: dict[str, np.ndarray]) -> dict[str, Any]:
    """Equal-frequency levels per attribute; confidence of a level = mean raw confidence of its members."""
    attributes = {}
    for name, raw in raw_by_attribute.items():
        raw = np.asarray(raw, dtype=np.float64)
        thresholds = fit_levels(raw)
        lv = levels(thresholds, raw)
        means = [float(raw[lv == k].mean()) if np.any(lv == k) else None for k in range(1, LEVELS + 1)]
        attributes[name] = {"thresholds": thresholds, "level_confidence": means, "fitted_on": int(raw.size)}
    return {"method": "label_free", "attributes": attributes}


def fit_gold(
    raw_by_attribute: dict[str, np.ndarray],
    gold_raw_by_attribute: dict[str, np.ndarray],
    correct_by_attribute: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Equal-frequency levels as label-free (over all raw confidences); the confidence is an isotonic fit
    of correctness (1/0 on the gold users) on raw confidence."""
    cal = fit_label_free(raw_by_attribute)
    cal["method"] = "isotonic"
    for name, entry in cal["attributes"].items():
        gold_raw = np.asarray(gold_raw_by_attribute.get(name, np.zeros(0)), dtype=np.float64)
        x, y = isotonic(gold_raw, correct_by_attribute.get(name, np.zeros(0)))
        entry.update({"isotonic_x": x.tolist(), "isotonic_y": y.tolist(), "gold": int(gold_raw.size)})
        raw = np.asarray(raw_by_attribute[name], dtype=np.float64)
        lv, fitted = levels(entry["thresholds"], raw), np.interp(raw, x, y)
        entry["level_confidence"] = [float(fitted[lv == k].mean()) if np.any(lv == k) else None
                                     for k in range(1, LEVELS + 1)]  # fmt: skip
    return cal


GOLD_PRIOR_ANSWERS = 5.0  # fit_levels_on_gold: pseudo-answers at the attribute's gold accuracy per level


def fit_levels_on_gold(
    base: dict[str, Any] | None,
    levels_by_attribute: dict[str, np.ndarray],
    correct_by_attribute: dict[str, np.ndarray],
    fitted_for: str,
    prior: float = GOLD_PRIOR_ANSWERS,
) -> dict[str, Any]:
    """The calibrator of a model that states levels (the student), refitted on its answers for gold users.

    ``base`` (the run's calibrator, or None) is kept; per attribute with gold answers, ``level_confidence``
    becomes an isotonic fit of correctness (1/0) on the stated level: each level's gold accuracy, shrunk
    towards the attribute's gold accuracy by ``prior`` pseudo-answers (a level stated twice is not
    confidence 0 or 1), made non-decreasing by pool-adjacent-violators weighted by the answers, and
    interpolated over levels no gold answer stated (flat beyond the outermost). An attribute without gold
    answers keeps the base's table. ``fitted_for`` names the model (kept in the calibrator).

    >>> cal = fit_levels_on_gold(None, {"g": np.array([1, 1, 2, 2, 3])}, {"g": np.array([0, 1, 1, 1, 0])}, "rl", 0)
    >>> cal["attributes"]["g"]["level_confidence"]  # 0.5, 1.0, 0.0 -> levels 2 and 3 pooled: 2/3
    [0.5, 0.6667, 0.6667, 0.6667, 0.6667]
    """
    cal: dict[str, Any] = json.loads(json.dumps(base)) if base else {"method": "none", "attributes": {}}
    cal["method"] = f"{cal.get('method', 'none')}+student_gold"
    cal["fitted_for"] = fitted_for
    for name, lv in levels_by_attribute.items():
        lv = np.asarray(lv, dtype=np.int64)
        correct = np.asarray(correct_by_attribute[name], dtype=np.float64)
        if lv.size == 0:
            continue
        answers = np.bincount(lv, minlength=LEVELS + 1)[1:]
        right = np.bincount(lv, weights=correct, minlength=LEVELS + 1)[1:]
        stated = np.flatnonzero(answers)
        overall = float(correct.mean())
        accuracy = (right[stated] + prior * overall) / (answers[stated] + prior)
        x, fitted = isotonic(stated + 1.0, accuracy, answers[stated] + prior)
        table = np.interp(np.arange(1, LEVELS + 1), x, fitted)
        entry = cal["attributes"].setdefault(name, {})
        entry["level_confidence"] = [round(float(v), 4) for v in table]
        entry["student_gold"] = {"answers": answers.tolist(), "correct": [int(r) for r in right], "prior": prior}
    return cal


def apply(calibration: dict[str, Any], attribute: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(levels 1..5, calibrated confidence 0..1) for raw confidences of one attribute."""
    entry = calibration["attributes"].get(attribute)
    if entry is None:
        raise KeyError(
            f"calibration has no attribute {attribute!r}; it was fitted for {list(calibration['attributes'])}"
        )
    raw = np.asarray(raw, dtype=np.float64)
    lv = levels(entry["thresholds"], raw)
    if entry.get("isotonic_x"):
        return lv, np.interp(raw, entry["isotonic_x"], entry["isotonic_y"])
    table = np.array([np.nan if m is None else m for m in entry["level_confidence"]], dtype=np.float64)
    conf = table[lv - 1]
    return lv, np.where(np.isnan(conf), raw, conf)  # an empty level (unseen at fit time) keeps the raw value


def isotonic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing (weighted) least-squares fit of y on x (pool adjacent violators); returns breakpoints
    for np.interp.

    >>> xs, ys = isotonic(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.0, 1.0, 0.0, 1.0]))
    >>> ys.tolist()
    [0.0, 0.5, 0.5, 1.0]
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])  # nothing to fit: identity
    w = np.ones_like(x) if weight is None else np.asarray(weight, dtype=np.float64)
    xs, inverse = np.unique(x, return_inverse=True)  # tied x share one fitted value
    counts = np.bincount(inverse, weights=w)
    means = np.bincount(inverse, weights=y * w) / counts
    blocks: list[list[float]] = []  # [mean, weight, number of distinct x]
    for mean, mass in zip(means.tolist(), counts.tolist(), strict=True):
        blocks.append([mean, float(mass), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m1, w1, n1), (m2, w2, n2) = blocks[-2], blocks[-1]
            blocks[-2:] = [[(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2]]
    fitted = np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])
    return xs, fitted
