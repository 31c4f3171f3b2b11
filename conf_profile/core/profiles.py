"""Student outputs -> profile rows (DESIGN.md 1.7): one wide row per user, and the long form.

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

from typing import Any

import pyarrow as pa

from conf_profile.core.student import parse_student_output
from conf_profile.core.taxonomy import UNKNOWN, Taxonomy

LONG_COLUMNS = ("user_id", "attribute", "value", "confidence", "level", "evidence")


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
