"""The stage ladder: every stage scored on the same users, with paired-bootstrap confidence intervals.

A stage's predictions are aligned on one list of users; a user a stage has no prediction for counts as an
abstention (a miss), so stages are compared on equal terms. Per attribute and macro over attributes:

- F1 with abstention as a miss: precision over answered users, recall over users with a truth value;
  F1 = 2 x correct / (answered + with truth);
- AURC: the area under the risk-coverage curve when answers are taken in order of the stage's own
  confidence, abstentions last and wrong (so a stage that answers less cannot look better by abstaining);
  ties in confidence are averaged over their orders (the expected curve). Lower is better.

The paired bootstrap resamples users (the same resample for every stage and attribute) and reports each
stage's difference to another stage with a 95% percentile interval: a difference whose interval lies above
0 (below 0 for AURC) is one the users resampled do not explain.

>>> correct = np.array([True, False, True, False])
>>> round(aurc(np.array([0.9, 0.8, 0.7, np.nan]), correct), 4)  # risks 0, 1/2, 1/3, 2/4 at coverage 1..4
0.3333
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttributeScores:
    """One stage on one attribute, aligned on the ladder's users (arrays of length n)."""

    has_truth: np.ndarray  # bool: the user has a truth value for this attribute
    answered: np.ndarray  # bool: the stage named a value
    correct: np.ndarray  # bool: answered and equal to the truth
    confidence: np.ndarray  # float, NaN where not answered (or where the stage states none)


def align(
    users: Sequence[str],
    truth: dict[str, str | None],
    predicted: dict[str, tuple[str | None, float | None]],
    unknown: str = "unknown",
) -> AttributeScores:
    """Scores of one stage on one attribute: ``predicted`` maps user -> (value, confidence).

    >>> s = align(["a", "b", "c"], {"a": "x", "b": "y", "c": None}, {"a": ("x", 0.9), "b": ("unknown", None)})
    >>> s.has_truth.tolist(), s.answered.tolist(), s.correct.tolist()
    ([True, True, False], [True, False, False], [True, False, False])
    """
    t = [truth.get(u) for u in users]
    p = [predicted.get(u, (None, None)) for u in users]
    has_truth = np.array([x is not None for x in t], dtype=bool)
    answered = np.array([v not in (None, unknown) for v, _ in p], dtype=bool) & has_truth
    correct = answered & np.array([v == x for (v, _), x in zip(p, t, strict=True)], dtype=bool)
    conf = np.array([np.nan if c is None or not a else float(c) for (_, c), a in zip(p, answered, strict=True)])
    return AttributeScores(has_truth, answered, correct, conf)


def f1(scores: AttributeScores, weights: np.ndarray | None = None) -> np.ndarray | float:
    """F1 with abstention as a miss; with ``weights`` (resamples x users, counts) one F1 per resample.

    >>> s = align(["a", "b"], {"a": "x", "b": "y"}, {"a": ("x", 1.0), "b": ("x", 1.0)})
    >>> f1(s)  # precision 1/2, recall 1/2
    0.5
    """
    parts = np.stack([scores.correct, scores.answered, scores.has_truth]).astype(np.float64)  # (3, n)
    if weights is None:
        c, a, t = parts.sum(axis=1)
        return float(2 * c / (a + t)) if a + t > 0 else 0.0
    c, a, t = (weights @ parts.T).T
    return np.divide(2 * c, a + t, out=np.zeros_like(c), where=a + t > 0)


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve over all users given (NaN confidence: abstained, counted wrong and
    last); tied confidences take the expected risk over their orders."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    n = confidence.size
    if n == 0:
        return 0.0
    key = np.where(np.isnan(confidence), -np.inf, confidence)
    wrong = (~correct | np.isnan(confidence)).astype(np.float64)
    levels, group = np.unique(-key, return_inverse=True)  # groups in descending confidence
    size = np.bincount(group, minlength=levels.size).astype(np.float64)
    errors = np.bincount(group, weights=wrong, minlength=levels.size)
    before_n = np.cumsum(size) - size
    before_e = np.cumsum(errors) - errors
    k = np.arange(1, n + 1, dtype=np.float64)
    g = np.searchsorted(np.cumsum(size), k, side="left")  # the group holding the k-th answer
    expected_errors = before_e[g] + (k - before_n[g]) * errors[g] / size[g]
    return float(np.mean(expected_errors / k))


def risk_coverage(stage: Sequence[AttributeScores], points: int = 50) -> dict[str, list[float]]:
    """The risk-coverage curve of the (user, attribute) pairs with a truth value, pooled over attributes, in
    order of confidence (abstentions last): at most ``points`` points, for the report's plot.

    >>> s = align(["a", "b"], {"a": "x", "b": "y"}, {"a": ("x", 0.9), "b": ("x", 0.2)})
    >>> risk_coverage([s])
    {'coverage': [0.5, 1.0], 'risk': [0.0, 0.5]}
    """
    conf = np.concatenate([s.confidence[s.has_truth] for s in stage]) if stage else np.zeros(0)
    correct = np.concatenate([s.correct[s.has_truth] for s in stage]) if stage else np.zeros(0, bool)
    if conf.size == 0:
        return {"coverage": [], "risk": []}
    order = np.argsort(np.where(np.isnan(conf), -np.inf, -conf), kind="stable")
    wrong = np.cumsum(~correct[order] | np.isnan(conf[order]))
    k = np.arange(1, conf.size + 1)
    keep = np.unique(np.linspace(0, conf.size - 1, min(points, conf.size)).round().astype(np.int64))
    return {"coverage": [round(float(x), 4) for x in k[keep] / conf.size],
            "risk": [round(float(x), 4) for x in wrong[keep] / k[keep]]}  # fmt: skip


def bootstrap_weights(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) counts of each user in each resample (sampling users with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64) if n else np.zeros((0, 0))


def macro_f1(stage: Sequence[AttributeScores], weights: np.ndarray | None = None) -> np.ndarray | float:
    values = np.stack([np.atleast_1d(f1(s, weights)) for s in stage]).mean(axis=0)
    return values if weights is not None else float(values[0])


def coverage(stage: Sequence[AttributeScores]) -> float:
    """The share of users with a truth value that the stage answered, averaged over attributes.

    >>> coverage([align(["a", "b"], {"a": "x", "b": "y"}, {"a": ("x", 0.9)}),
    ...           align(["a", "b"], {"a": "x", "b": None}, {"a": ("unknown", None)})])
    0.25
    """
    shares = [s.answered.sum() / s.has_truth.sum() for s in stage if s.has_truth.any()]
    return float(np.mean(shares)) if shares else 0.0


def macro_aurc(stage: Sequence[AttributeScores], weights: np.ndarray | None = None) -> np.ndarray | float:
    """Mean AURC over attributes (users with a truth value); per resample with ``weights``."""
    if weights is None:
        return float(np.mean([aurc(s.confidence[s.has_truth], s.correct[s.has_truth]) for s in stage]))
    out = np.zeros(weights.shape[0])
    for r, w in enumerate(weights.astype(np.int64)):
        idx = np.repeat(np.arange(w.size), w)
        out[r] = np.mean([aurc(s.confidence[idx][s.has_truth[idx]], s.correct[idx][s.has_truth[idx]]) for s in stage])
    return out


def interval(differences: np.ndarray, point: float) -> dict[str, float]:
    """The point difference and the 95% percentile interval of its resampled values.

    >>> interval(np.arange(101) / 100.0, 0.5)
    {'diff': 0.5, 'low': 0.025, 'high': 0.975}
    """
    low, high = np.percentile(differences, [2.5, 97.5]) if differences.size else (point, point)
    return {"diff": round(point, 4), "low": round(float(low), 4), "high": round(float(high), 4)}


def ladder(
    stages: dict[str, Sequence[AttributeScores]],
    reference: str | None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, object]]:
    """Per stage (in the given order): macro F1 and AURC, and their paired-bootstrap differences to the stage
    before it (``vs_previous``) and to ``reference`` (``vs_reference``; e.g. the majority class)."""
    names = list(stages)
    n = next(iter(stages.values()))[0].has_truth.size if names else 0
    weights = bootstrap_weights(n, resamples, seed)
    point = {name: (float(macro_f1(stages[name])), float(macro_aurc(stages[name]))) for name in names}
    boot = {name: (np.asarray(macro_f1(stages[name], weights)), np.asarray(macro_aurc(stages[name], weights)))
            for name in names}  # fmt: skip
    out: dict[str, dict[str, object]] = {}
    for k, name in enumerate(names):
        row: dict[str, object] = {"f1": round(point[name][0], 4), "aurc": round(point[name][1], 4), "users": n}
        for label, other in (("vs_previous", names[k - 1] if k else None), ("vs_reference", reference)):
            if other is None or other == name or other not in stages:
                continue
            row[label] = {
                "stage": other,
                "f1": interval(boot[name][0] - boot[other][0], point[name][0] - point[other][0]),
                "aurc": interval(boot[name][1] - boot[other][1], point[name][1] - point[other][1]),
            }
        out[name] = row
    return out


def markdown(result: dict[str, dict[str, object]]) -> str:
    """The ladder as a Markdown table: each difference with its 95% interval in brackets.

    >>> print(markdown({"a": {"f1": 0.5, "aurc": 0.4, "users": 10}}))
    | stage | F1 | F1 vs previous | F1 vs reference | AURC | AURC vs previous | AURC vs reference |
    |---|---|---|---|---|---|---|
    | a | 0.500 | - | - | 0.400 | - | - |
    """

    def diff(row: dict[str, object], label: str, key: str) -> str:
        d = row.get(label)
        if not isinstance(d, dict):
            return "-"
        x = d[key]
        return f"{x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"

    lines = ["| stage | F1 | F1 vs previous | F1 vs reference | AURC | AURC vs previous | AURC vs reference |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in result.items():
        f1_cells = f"{row['f1']:.3f} | {diff(row, 'vs_previous', 'f1')} | {diff(row, 'vs_reference', 'f1')}"
        aurc_cells = f"{row['aurc']:.3f} | {diff(row, 'vs_previous', 'aurc')} | {diff(row, 'vs_reference', 'aurc')}"
        lines.append(f"| {name} | {f1_cells} | {aurc_cells} |")
    return "\n".join(lines)
