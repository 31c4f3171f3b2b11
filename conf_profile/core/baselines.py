"""The pure parts of the report's references (conf_profile/stages/baselines.py): the user split and the majority.

>>> half("1"), half("4"), majority(["b", "a", "b"])
('test', 'train', ('b', 0.6666666666666666))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from conf_profile.core.ingest import bucket_of


def half(user_id: str) -> str:
    """``train`` or ``test``: a stable split of users in halves (crc32 of the id, the same in every run)."""
    return "train" if bucket_of(user_id, 2) == 0 else "test"


def majority(values: Sequence[str]) -> tuple[str, float]:
    """The most frequent value (ties: the first in sorted order) and its share."""
    if not values:
        raise ValueError("majority of no values")
    counts = Counter(values)
    best = min(counts, key=lambda v: (-counts[v], v))
    return best, counts[best] / len(values)
