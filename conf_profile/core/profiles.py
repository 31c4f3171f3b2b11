"""Student outputs -> profile rows (docs/architecture.md 1): one wide row per user, and the long form.

The student states a calibrated level 1..5 per attribute; its confidence (0..1) is the level's confidence in
the saved calibrator (the mean raw vote confidence of that level when it was fitted), or level / 5 without
one. An output that does not parse keeps the user, with every attribute ``unknown`` and the parse error.

>>> from conf_profile.core.taxonomy import taxonomy_from_dict
>>> tax = taxonomy_from_dict({"name": "t", "attributes": [{"name": "g", "description": "g", "values": [
...     {"name": "m", "definition": "m"}]}]})
>>> row = profile_row("u1", '{"rationale": "r", "g": {"value": "m", "level": 4, "evidence": "e"}}', tax, None)
>>> row["g"], row["g_level"], row["g_confidence"], row["error"]
('m', 4, 0.8, None)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from conf_profile.core.student import parse_student_output
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy
from conf_profile.core.voting import LINEAR_WEIGHTS, strongest, vote

LONG_COLUMNS = ("user_id", "attribute", "value", "confidence", "level", "evidence")
# predictions/<stage>/: what the report scores of a stage's long form (the student's also has evidence)
PREDICTION_SCHEMA = pa.schema([("user_id", pa.string()), ("attribute", pa.string()), ("value", pa.string()),
                               ("confidence", pa.float64()), ("level", pa.int64())])  # fmt: skip
# Provenance on every row of the profile tables: which model, taxonomy, run and time; the document the row was
# made from (its content hash, which the nightly refresh compares to find changed users); the teachers that
# labeled the student's training set (JSON name -> model) and their prompt version; the student's prompt
# version; the calibrator that maps levels to confidences (its hash, or "none").
PROVENANCE = ("model", "taxonomy_version", "run_id", "generated_at", "content_hash", "teachers",
              "teacher_prompt_version", "student_prompt_version", "calibration_hash")  # fmt: skip


def level_confidence(calibration: dict[str, Any] | None, attribute: str, level: int) -> float:
    table = ((calibration or {}).get("attributes", {}).get(attribute) or {}).get("level_confidence") or []
    value = table[level - 1] if 1 <= level <= len(table) else None
    return round(float(value), 4) if value is not None else level / 5.0


def profile_row(user_id: str, text: Any, taxonomy: Taxonomy, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """The wide profile row of one user (without provenance columns)."""
    parsed = parse_student_output(text, taxonomy)
    row: dict[str, Any] = {"user_id": user_id}
    for name in taxonomy.attribute_names:
        j = parsed.judgements.get(name) if parsed.error is None else None
        answered = j is not None and j.value != UNKNOWN
        row[name] = j.value if j is not None else UNKNOWN
        row[f"{name}_confidence"] = level_confidence(calibration, name, j.confidence) if answered and j else None
        row[f"{name}_level"] = j.confidence if answered and j else None
        row[f"{name}_evidence"] = j.evidence if answered and j else None
    row["rationale"] = parsed.rationale if parsed.error is None else ""
    row["error"] = parsed.error
    return row


def consensus_rows(
    user_ids: Sequence[str],
    texts: Sequence[Sequence[Any]],
    taxonomy: Taxonomy,
    calibration: dict[str, Any] | None,
    confidence_weights: Sequence[float] = LINEAR_WEIGHTS,
) -> list[dict[str, Any]]:
    """Self-consistency: the wide rows of users with k student outputs each (``texts[i]`` are user i's).

    A user with one output is ``profile_row``. With several, the outputs vote as the teacher samples do
    (core.voting: weight w(stated level); the user abstains only when no output names a value), except that an
    ``unknown`` counts with full weight: the student states every abstention at level 1 (its training target),
    and at that weight several abstentions would hardly lower the winner's share. The stated levels are already
    calibrated, so they are combined on the level scale, not mapped through the calibrator's raw thresholds
    again: level = round(share x mean supporter level) (at least 1), confidence = that level's confidence
    (``level_confidence``). Unanimous outputs therefore keep the single output's level and confidence;
    disagreement lowers them. Evidence comes from the strongest supporter; the rationale from the output that
    supports the winners with the most weight. The user's error is None when any output parsed, else the first
    output's error.

    >>> from conf_profile.core.taxonomy import taxonomy_from_dict
    >>> tax = taxonomy_from_dict({"name": "t", "attributes": [{"name": "g", "description": "g", "values": [
    ...     {"name": "m", "definition": "m"}, {"name": "f", "definition": "f"}]}]})
    >>> out = lambda v, lv: '{"rationale": "%s", "g": {"value": "%s", "level": %d, "evidence": "e"}}' % (v, v, lv)
    >>> row = consensus_rows(["u"], [[out("m", 5), out("f", 2), out("m", 5)]], tax, None)[0]
    >>> row["g"], row["g_level"], row["g_confidence"], row["rationale"]  # share 2 / 2.4 x level 5 = 4.17 -> 4
    ('m', 4, 0.8, 'm')
    """
    rows: list[dict[str, Any]] = [{} for _ in user_ids]
    multi = [i for i, t in enumerate(texts) if len(t) != 1]
    for i, t in enumerate(texts):
        if len(t) == 1:
            rows[i] = profile_row(user_ids[i], t[0], taxonomy, calibration)
    if not multi:
        return rows
    n = len(multi)
    parsed = [[parse_student_output(text, taxonomy) for text in texts[i]] for i in multi]
    owner = np.array([j for j, outs in enumerate(parsed) for _ in outs], dtype=np.int64)
    flat = [p for outs in parsed for p in outs]
    support = np.zeros(len(flat))  # per output: weight behind the winners (rationale choice)
    for j, i in enumerate(multi):
        ok = [p for p in parsed[j] if p.error is None]
        first_error = parsed[j][0].error if parsed[j] else "no_output"
        rows[i] = {"user_id": user_ids[i], "rationale": "", "error": None if ok else first_error}
    for attr in taxonomy.attribute_names:
        values = taxonomy.attribute(attr).value_names
        index, unknown = {v: k for k, v in enumerate(values)}, values.index(UNKNOWN)
        pos, val, lev = [], [], []
        for k, p in enumerate(flat):
            jd = p.judgements.get(attr) if p.error is None else None
            if jd is not None and jd.value in index:
                pos.append(k)
                val.append(index[jd.value])
                lev.append(5 if jd.value == UNKNOWN else jd.confidence)  # abstentions at full weight
        pos_a, val_a, lev_a = (np.array(x, dtype=np.int64) for x in (pos, val, lev))
        users = owner[pos_a]
        votes = vote(users, val_a, lev_a, np.ones(len(pos)), n, len(values), unknown, confidence_weights)
        level = np.clip(np.floor(votes.share * np.nan_to_num(votes.mean_confidence) + 0.5), 1, 5).astype(np.int64)
        agree = (val_a == votes.value[users]) & (val_a != unknown)
        w = np.asarray(confidence_weights, dtype=np.float64)[lev_a - 1]
        np.add.at(support, pos_a[agree], w[agree])
        best = strongest(users[agree], lev_a[agree].astype(np.float64), n)
        for j, i in enumerate(multi):
            answered = votes.value[j] != unknown
            evidence = flat[pos_a[agree][best[j]]].judgements[attr].evidence if answered and best[j] >= 0 else None
            rows[i].update({
                attr: values[votes.value[j]],
                f"{attr}_confidence": level_confidence(calibration, attr, int(level[j])) if answered else None,
                f"{attr}_level": int(level[j]) if answered else None,
                f"{attr}_evidence": evidence,
            })  # fmt: skip
    best_output = strongest(owner, support + np.array([p.error is None for p in flat]) * 1e-6, n)
    for j, i in enumerate(multi):
        k = best_output[j]
        if k >= 0 and flat[k].error is None:
            rows[i]["rationale"] = flat[k].rationale
    return rows


def profile_schema(taxonomy: Taxonomy, provenance: tuple[str, ...] = ()) -> pa.Schema:
    fields = [pa.field("user_id", pa.string())]
    for name in taxonomy.attribute_names:
        fields += [pa.field(name, pa.string()), pa.field(f"{name}_confidence", pa.float64()),
                   pa.field(f"{name}_level", pa.int8()), pa.field(f"{name}_evidence", pa.string())]  # fmt: skip
    fields += [pa.field("rationale", pa.string()), pa.field("error", pa.string())]
    return pa.schema(fields + [pa.field(p, pa.string()) for p in provenance])


def long_form(profiles: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    """One row per user x attribute (LONG_COLUMNS)."""
    parts = []
    for name in taxonomy.attribute_names:
        parts.append(pa.table({
            "user_id": profiles.column("user_id"),
            "attribute": pa.array([name] * profiles.num_rows, pa.string()),
            "value": profiles.column(name),
            "confidence": profiles.column(f"{name}_confidence"),
            "level": profiles.column(f"{name}_level"),
            "evidence": profiles.column(f"{name}_evidence"),
        }))  # fmt: skip
    return pa.concat_tables(parts) if parts else pa.table({c: [] for c in LONG_COLUMNS})


def gold_answers(
    profiles: pa.Table, taxonomy: Taxonomy, truth: dict[str, dict[str, str | None]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(attribute -> the stated levels of the answered rows of users with a true value; attribute -> whether
    each of those answers is right, 1/0) for profile rows and a truth table (core.metrics.load_truth)."""
    levels, correct = {}, {}
    users = profiles.column("user_id").to_pylist()
    for name in taxonomy.attribute_names:
        true = [truth.get(name, {}).get(u) for u in users]
        values, lv = profiles.column(name).to_pylist(), profiles.column(f"{name}_level").to_pylist()
        keep = [i for i, (t, v, k) in enumerate(zip(true, values, lv, strict=True))
                if t is not None and k is not None and v != UNKNOWN]  # fmt: skip
        levels[name] = np.array([lv[i] for i in keep], dtype=np.int64)
        correct[name] = np.array([values[i] == true[i] for i in keep], dtype=np.float64)
    return levels, correct


def recalibrate(profiles: pa.Table, taxonomy: Taxonomy, calibration: dict[str, Any] | None) -> pa.Table:
    """Profile rows with each answered attribute's confidence re-read from its level under ``calibration``
    (``level_confidence``), and the ``calibration_hash`` column (when present) set to that calibrator's."""
    for name in taxonomy.attribute_names:
        table = pa.array([level_confidence(calibration, name, k) for k in range(1, 6)], pa.float64())
        level = profiles.column(f"{name}_level")
        index = pc.subtract(pc.cast(level, pa.int64()), 1)  # null where the attribute is not answered
        confidence = pc.take(table, index)
        column = f"{name}_confidence"
        profiles = profiles.set_column(profiles.schema.get_field_index(column), column, confidence)
    if "calibration_hash" in profiles.column_names:
        digest = pa.array([calibration_hash(calibration)] * profiles.num_rows, pa.string())
        profiles = profiles.set_column(profiles.schema.get_field_index("calibration_hash"), "calibration_hash", digest)
    return profiles


def calibration_hash(calibration: dict[str, Any] | None) -> str:
    """12 hex digits of SHA-256 over the calibrator's canonical JSON; "none" without one.

    >>> calibration_hash(None), calibration_hash({"b": 1, "a": [0.5]}) == calibration_hash({"a": [0.5], "b": 1})
    ('none', True)
    """
    if calibration is None:
        return "none"
    canonical = json.dumps(calibration, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def teachers_json(teachers: Sequence[tuple[str, str]] | None) -> str | None:
    """The teachers (name, model) as compact JSON sorted by name; None when they are not known.

    >>> teachers_json([("b", "org/model-b"), ("a", "embedded:smollm2")])
    '{"a":"embedded:smollm2","b":"org/model-b"}'
    """
    if teachers is None:
        return None
    return json.dumps(dict(sorted(teachers)), separators=(",", ":"))
