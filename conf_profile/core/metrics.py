"""Evaluation metrics of profile predictions against truth, with abstention handled explicitly.

Per attribute, over the users that have a truth value: precision over the answered users (prediction not
``unknown``), recall over all of them, F1 of the two; coverage (answered share); ECE and Brier of the
stated confidence against correctness over the answered users; coverage and precision at each minimum
level; the confusion matrix (truth rows, prediction columns, ``unknown`` as the last column).

>>> m = attribute_metrics(["a", "a", "b", "b"], ["a", "b", "b", "unknown"], [0.9, 0.6, 0.8, None],
...                       [5, 3, 4, None], labels=("a", "b", "unknown"))
>>> m["precision"], m["recall"], m["coverage"]
(0.6667, 0.5, 0.75)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from conf_profile.core.taxonomy import Taxonomy

UNKNOWN = "unknown"
ECE_BINS = 10


def attribute_metrics(
    truth: Sequence[str | None],
    predicted: Sequence[str | None],
    confidence: Sequence[float | None],
    level: Sequence[int | None],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Metrics of one attribute for one stage; users without a truth value are left out."""
    t = np.array([x if x is not None else "" for x in truth], dtype=object)
    p = np.array([x if x is not None else UNKNOWN for x in predicted], dtype=object)
    conf = np.array([np.nan if x is None else float(x) for x in confidence], dtype=np.float64)
    lv = np.array([0 if x is None else int(x) for x in level], dtype=np.int64)
    has_truth = t != ""
    t, p, conf, lv = t[has_truth], p[has_truth], conf[has_truth], lv[has_truth]
    answered = p != UNKNOWN
    correct = answered & (p == t)
    precision = _ratio(correct.sum(), answered.sum())
    recall = _ratio(correct.sum(), t.size)
    scored = answered & ~np.isnan(conf)
    return {
        "users": int(t.size),
        "answered": int(answered.sum()),
        "correct": int(correct.sum()),
        "coverage": _ratio(answered.sum(), t.size),
        "precision": precision,
        "recall": recall,
        "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall > 0 else 0.0,
        "ece": round(ece(conf[scored], correct[scored]), 4) if scored.any() else None,
        "brier": round(brier(conf[scored], correct[scored]), 4) if scored.any() else None,
        "by_level": coverage_by_level(lv, answered, correct) if (lv > 0).any() else [],  # a stage without levels
        "confusion": {"labels": list(labels), "matrix": confusion(t, p, labels).tolist()},
    }


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error with equal-width bins over [0, 1] (confidence 1.0 in the last bin).

    >>> round(ece(np.array([0.9, 0.9, 0.2, 0.2]), np.array([1, 0, 0, 0])), 3)
    0.3
    """
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if confidence.size == 0:
        return 0.0
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(
        np.bincount(index, weights=confidence, minlength=bins) - np.bincount(index, weights=correct, minlength=bins)
    )
    return float(gap.sum() / confidence.size) if count.sum() else 0.0


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per non-empty bin: mean confidence, accuracy, count (the reliability diagram's points)."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    points = []
    for b in range(bins):
        member = index == b
        if member.any():
            points.append(
                {
                    "bin": b,
                    "confidence": round(float(confidence[member].mean()), 4),
                    "accuracy": round(float(correct[member].mean()), 4),
                    "count": int(member.sum()),
                }
            )
    return points


def brier(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared error of the confidence against correctness (0/1).

    >>> brier(np.array([1.0, 0.5]), np.array([1, 0]))
    0.125
    """
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    return float(np.mean((confidence - correct) ** 2)) if confidence.size else 0.0


def coverage_by_level(level: np.ndarray, answered: np.ndarray, correct: np.ndarray) -> list[dict[str, Any]]:
    """For each minimum level 1..5: the share of users answered at that level or above, and its precision."""
    rows = []
    total = max(1, level.size)
    for minimum in range(1, 6):
        kept = answered & (level >= minimum)
        rows.append({"min_level": minimum, "coverage": _ratio(kept.sum(), total),
                     "precision": _ratio((correct & kept).sum(), kept.sum()), "users": int(kept.sum())})  # fmt: skip
    return rows


def confusion(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Counts with truth in rows and prediction in columns, in ``labels`` order (others are dropped).

    >>> confusion(np.array(["a", "b", "b"]), np.array(["a", "a", "b"]), ["a", "b"]).tolist()
    [[1, 0], [1, 1]]
    """
    position = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth.tolist(), predicted.tolist(), strict=True):
        if t in position and p in position:
            matrix[position[t], position[p]] += 1
    return matrix


def macro(per_attribute: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Unweighted means over attributes of precision, recall, F1, coverage, ECE and Brier."""
    out: dict[str, float | None] = {}
    for key in ("precision", "recall", "f1", "coverage", "ece", "brier"):
        values = [m[key] for m in per_attribute.values() if m.get(key) is not None]
        out[key] = round(float(np.mean(values)), 4) if values else None
    return out


def load_truth(path: str, taxonomy: Taxonomy, option: str) -> dict[str, dict[str, str | None]]:
    """attribute -> user_id -> true value, from a Parquet file with user_id and one column per attribute
    (the built-in data's truth.parquet). ``option`` names the setting in errors."""
    if "://" in path and not path.startswith("file://"):  # a URI (s3://...): pyarrow opens it
        import pyarrow.fs as pafs

        filesystem, where = pafs.FileSystem.from_uri(path)
        if filesystem.get_file_info(where).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{option} {path}: no such file")
        table = pq.read_table(where, filesystem=filesystem)
    elif not Path(path).exists():
        raise FileNotFoundError(f"{option} {path}: no such file")
    else:
        table = pq.read_table(path)
    missing = [c for c in ("user_id", *taxonomy.attribute_names) if c not in table.column_names]
    if missing:
        raise ValueError(f"{option} {path}: missing columns {missing} (need user_id and one per attribute)")
    users = table.column("user_id").to_pylist()
    return {a: dict(zip(users, table.column(a).to_pylist(), strict=True)) for a in taxonomy.attribute_names}


def _ratio(numerator: Any, denominator: Any) -> float:
    return round(float(numerator) / float(denominator), 4) if denominator else 0.0


def injection_adoption(predictions: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, Any]:
    """How often a stage answered the value a hostile event tried to inject (the truth is always another
    value). ``predictions``: user_id, attribute, value; ``targets``: user_id, attribute, injected_value,
    kind. Counted over the targets the stage has a prediction for.

    >>> injection_adoption([{"user_id": "u", "attribute": "g", "value": "f"}],
    ...                    [{"user_id": "u", "attribute": "g", "injected_value": "f", "kind": "k"},
    ...                     {"user_id": "v", "attribute": "g", "injected_value": "f", "kind": "k"}])
    {'users': 1, 'adopted': 1, 'rate': 1.0, 'by_kind': {'k': {'users': 1, 'adopted': 1}}}
    """
    predicted = {(p["user_id"], p["attribute"]): p["value"] for p in predictions}
    users = adopted = 0
    by_kind: dict[str, dict[str, int]] = {}
    for t in targets:
        value = predicted.get((t["user_id"], t["attribute"]))
        if value is None:
            continue
        hit = int(value == t["injected_value"])
        users, adopted = users + 1, adopted + hit
        kind = by_kind.setdefault(t["kind"], {"users": 0, "adopted": 0})
        kind["users"], kind["adopted"] = kind["users"] + 1, kind["adopted"] + hit
    return {"users": users, "adopted": adopted, "rate": round(adopted / users, 4) if users else None,
            "by_kind": by_kind}  # fmt: skip
