"""A stand-in for the vLLM engine, for the dataflow benchmark only (``python -m jobs.bench dataflow``).

It is not a model: for each request row it writes an output that is valid against the request's own JSON
schema (the teacher's or the student's), with values picked by a hash of the user and sample, at a
configurable rate, so that the plumbing around the engine (reading, fan-out, pre/postprocess, parsing,
voting, writing) can be measured at sizes no real engine reaches on a small machine. The stages' code is
unchanged: ``engines.use_stand_in`` swaps it in for the processor that labeling and inference build.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pyarrow as pa

from conf_profile.core.settings import EngineConfig
from conf_profile.raycluster import SMALL_CPUS

NAME = "stand-in engine (no model)"


def stand_in_output(schema: dict[str, Any], key: str) -> str:
    """A compact JSON object valid against ``schema`` (a rationale and per attribute an enum value, an
    integer score 1..5 and evidence), its choices drawn from a hash of ``key``.

    >>> schema = {"properties": {"rationale": {"type": "string"}, "age": {"type": "object", "properties": {
    ...     "value": {"enum": ["young", "old"]}, "level": {"type": "integer"}, "evidence": {"type": "string"}}}}}
    >>> json.loads(stand_in_output(schema, "u1:0"))["age"]["value"] in ("young", "old")
    True
    >>> stand_in_output(schema, "u1:0") == stand_in_output(schema, "u1:0")
    True
    """
    digest = hashlib.blake2b(key.encode(), digest_size=32).digest()
    out: dict[str, Any] = {}
    for i, (name, spec) in enumerate(schema["properties"].items()):
        if spec.get("type") == "string":
            out[name] = "stand-in output"
            continue
        fields = spec["properties"]
        values = fields["value"]["enum"]
        score = next(f for f in fields if f not in ("value", "evidence"))
        byte = digest[i % len(digest)]
        out[name] = {"value": values[byte % len(values)], score: 1 + (byte >> 4) % 5, "evidence": ""}
    return json.dumps(out, ensure_ascii=False)


class StandInEngine:
    """``rows_per_s`` outputs per second per replica (0: as fast as the plumbing goes); one actor per
    configured engine replica, fed batches of the engine's batch size, as the real processor is."""

    def __init__(self, rows_per_s: float = 0.0) -> None:
        if rows_per_s < 0:
            raise ValueError("rows_per_s must be >= 0")
        self.rows_per_s = rows_per_s

    def processor(self, engine: EngineConfig, preprocess: Any, postprocess: Any) -> Any:
        rate = self.rows_per_s

        def run(requests: Any) -> Any:
            return requests.map_batches(
                _Generate,
                fn_constructor_args=(preprocess, postprocess, rate),
                batch_size=engine.batch_size,
                batch_format="pyarrow",
                concurrency=engine.replicas,
                num_cpus=SMALL_CPUS,
            )

        return run


class _Generate:
    """One stand-in replica: preprocess each row, write its output, postprocess it."""

    def __init__(self, preprocess: Any, postprocess: Any, rows_per_s: float) -> None:
        self.preprocess, self.postprocess, self.rows_per_s = preprocess, postprocess, rows_per_s
        self.schemas: dict[str, dict[str, Any]] = {}

    def __call__(self, batch: pa.Table) -> pa.Table:
        started = time.monotonic()
        out = []
        for row in batch.to_pylist():
            request = self.preprocess(row)
            params = request.pop("sampling_params")
            schema_text = (params.get("structured_outputs") or {}).get("json")
            if schema_text is None:
                raise ValueError("the stand-in engine writes structured outputs only (label.structured_output: on)")
            schema = self.schemas.get(schema_text) or self.schemas.setdefault(schema_text, json.loads(schema_text))
            messages = request.pop("messages")
            text = stand_in_output(schema, f"{row['user_id']}:{row.get('sample', 0)}:{row.get('teacher', '')}")
            request.update({
                "generated_text": text,
                "num_input_tokens": sum(len(m["content"]) for m in messages) // 4,
                "num_generated_tokens": len(text) // 4,
            })  # fmt: skip
            out.append(self.postprocess(request))
        if self.rows_per_s:
            time.sleep(max(0.0, len(out) / self.rows_per_s - (time.monotonic() - started)))
        return pa.Table.from_pylist(out)
