"""Generated teacher_samples/ tables (numpy + pyarrow only), for the aggregation benchmark and its tests.

Each user has a hidden value per attribute; each (teacher, sample) judgement names it with a probability
that rises with its stated confidence, names another value otherwise, abstains (``unknown``) at
``abstain_rate``, and a whole sample fails to parse at ``error_rate`` (every attribute null, as the parser
writes it). Evidence and rationale strings come from small banks, some with characters JSON must escape.
Vectorized over all rows: 8M rows (1M users x 8 samples) take seconds.

>>> from conf_profile.core.taxonomy import load_taxonomy
>>> t = teacher_samples_table(load_taxonomy(), users=3, samples=2, seed=0)
>>> t.num_rows, t.column("user_id").to_pylist()[:3]
(6, ['u0000000', 'u0000000', 'u0000001'])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from conf_profile.core.taxonomy import UNKNOWN, Taxonomy

EVIDENCE_BANK = ("searched strollers", 'said "retired"', "tab\tseparated", "back\\slash", "café visits",
                 "line\nbreak", "weekly groceries", "")  # fmt: skip
RATIONALE_BANK = ("The log points to the values above.", 'Quotes "here" and a \\ back-slash.', "",
                  "Mixed signals; weak evidence.", "Ünïcödé rationale\u2028with a separator.")  # fmt: skip


def teacher_samples_table(
    taxonomy: Taxonomy, users: int, samples: int, teachers: int = 1, seed: int = 0, abstain_rate: float = 0.15,
    error_rate: float = 0.03, prompt_version: str = "p", content_hash: str = "h",
) -> pa.Table:  # fmt: skip
    """users x teachers x samples rows with the teacher_samples columns aggregation reads, sorted by user,
    teacher and sample."""
    rng = np.random.default_rng(seed)
    rows = users * teachers * samples
    user = np.repeat(np.arange(users), teachers * samples)
    teacher = np.tile(np.repeat(np.arange(teachers), samples), users)
    sample = np.tile(np.arange(samples), users * teachers)
    failed = rng.random(rows) < error_rate
    ids = pa.array(np.char.add("u", np.char.zfill(np.arange(users).astype(str), 7)))
    columns: dict[str, pa.Array] = {
        "user_id": ids.take(pa.array(user)),
        "teacher": pa.array(np.char.add("teacher", teacher.astype(str))),
        "teacher_weight": pa.array(1.0 + 0.5 * (teacher > 0)),
        "sample": pa.array(sample.astype(np.int64)),
        "prompt_version": pa.array(np.full(rows, prompt_version)),
        "content_hash": pa.array(np.full(rows, content_hash)),
        "error": pa.array(np.full(rows, "not_json"), mask=~failed),
        "rationale": _bank(RATIONALE_BANK, rng.integers(0, len(RATIONALE_BANK), rows), failed),
    }
    for attr in taxonomy.attributes:
        known = [v for v in attr.value_names if v != UNKNOWN]
        names = pa.array([*known, UNKNOWN])
        truth = rng.integers(0, len(known), users)[user]
        confidence = rng.integers(1, 6, rows)
        right = rng.random(rows) < 0.3 + 0.12 * confidence  # level 5 is right 90% of the time
        other = (truth + rng.integers(1, max(len(known), 2), rows)) % len(known)
        value = np.where(right, truth, other)
        value = np.where(rng.random(rows) < abstain_rate, len(known), value)
        columns[f"{attr.name}_value"] = names.take(pa.array(value, mask=failed))
        columns[f"{attr.name}_confidence"] = pa.array(confidence, mask=failed)
        columns[f"{attr.name}_evidence"] = _bank(EVIDENCE_BANK, rng.integers(0, len(EVIDENCE_BANK), rows), failed)
        prob = np.round(rng.uniform(0.2, 1.0, rows), 4)
        columns[f"{attr.name}_token_prob"] = pa.array(prob, mask=failed | (value == len(known)))
    return pa.table(columns)


def _bank(bank: tuple[str, ...], index: np.ndarray, failed: np.ndarray) -> pa.Array:
    return pa.array(bank).take(pa.array(index, mask=failed))
