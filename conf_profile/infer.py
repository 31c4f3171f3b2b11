"""Batch inference: the student on vLLM actors (Ray Data LLM, the same processor as labeling) with the
student's structured output -> profile tables (conf_profile.core.profiles).

Two destinations:
- the product tables ``profiles/dt=DATE/`` (one row per user) and ``profile_attributes/dt=DATE/`` (long
  form), with provenance columns; a re-run of a date replaces its partition (written next to it, then
  renamed), never duplicates it;
- ``predictions/<name>/`` (long form) for the evaluation report (e.g. student_sft, student_rl).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core.profiles import long_form, profile_row, profile_schema
from conf_profile.core.settings import Config
from conf_profile.core.student import student_schema, student_system_prompt
from conf_profile.core.taxonomy import Taxonomy, load_taxonomy
from conf_profile.label import SMALL_CPUS, ChatRequest, engine_device, processor_config, read_documents

PROVENANCE = ("model", "taxonomy_version", "run_id", "generated_at")


def run_infer(
    cfg: Config, run_dir: Path, model: str, date: str | None = None, eval_name: str | None = None
) -> dict[str, Any]:
    """Profile the run's documents with ``model``; product tables for ``date`` (today by default), or
    ``predictions/<eval_name>/`` when an evaluation name is given."""
    import ray

    from conf_profile.raycluster import init_ray

    started = time.monotonic()
    if not (Path(model) / "config.json").exists():
        raise FileNotFoundError(f"--model {model}: not a model folder (run jobs.train_sft or jobs.train_rl first)")
    model = str(Path(model).resolve())  # engine actors may run in another working directory
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    docs = _documents(run_dir, cfg)
    cal_file = run_dir / "calibration.json"
    calibration = json.loads(cal_file.read_text(encoding="utf-8")) if cal_file.exists() else None
    init_ray(cfg.ray)
    device = engine_device(cfg.infer.engine, ray.cluster_resources())
    provenance = {"model": str(model), "taxonomy_version": taxonomy.version, "run_id": run_dir.name,
                  "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    profiles = _generate(docs, model, taxonomy, calibration, provenance, cfg, device)
    errors = int(pc.sum(pc.is_valid(profiles.column("error"))).as_py() or 0)
    cal_name = "calibration.json" if calibration else "none (confidence = level / 5)"
    entry: dict[str, Any] = {"users": profiles.num_rows, "parse_errors": errors, "device": device, "model": str(model),
                             "calibration": cal_name}  # fmt: skip
    if eval_name:
        _replace_folder(run_dir / "predictions" / eval_name, {"part-0.parquet": long_form(profiles, taxonomy)})
        entry["predictions"] = str(run_dir / "predictions" / eval_name)
    else:
        date = date or datetime.now(UTC).date().isoformat()
        _replace_folder(run_dir / "profiles" / f"dt={date}", {"part-0.parquet": profiles})
        attributes = long_form(profiles, taxonomy)
        for column in PROVENANCE:
            attributes = attributes.append_column(column, pa.array([provenance[column]] * attributes.num_rows))
        _replace_folder(run_dir / "profile_attributes" / f"dt={date}", {"part-0.parquet": attributes})
        entry.update({"date": date, "profiles": str(run_dir / "profiles" / f"dt={date}")})
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def _documents(run_dir: Path, cfg: Config) -> pa.Table:
    docs = read_documents(run_dir, ["user_id", "document"])
    if cfg.infer.exclude_labeled and (run_dir / "teacher_samples").is_dir():
        labeled = pq.read_table(run_dir / "teacher_samples", columns=["user_id"]).column("user_id").unique()
        docs = docs.filter(pc.invert(pc.is_in(docs.column("user_id"), value_set=labeled)))
    return docs.slice(0, cfg.infer.max_users) if cfg.infer.max_users else docs


def _generate(
    docs: pa.Table, model: str, taxonomy: Taxonomy, calibration: dict | None, provenance: dict[str, str], cfg: Config,
    device: str,
) -> pa.Table:  # fmt: skip
    import ray.data
    from ray.data.llm import build_processor

    engine = cfg.infer.engine
    params = {"temperature": cfg.infer.temperature, "max_tokens": cfg.infer.max_tokens}
    processor = build_processor(
        processor_config(model, engine, device),
        preprocess=ChatRequest(student_system_prompt(taxonomy), params, student_schema(taxonomy), request_seeds=False),
        postprocess=lambda row: {"user_id": row.get("user_id"), "generated_text": row.get("generated_text")},
        preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
    )
    requests = [{"user_id": u, "document": d, "seed": 0} for u, d in
                zip(docs.column("user_id").to_pylist(), docs.column("document").to_pylist(), strict=True)]  # fmt: skip
    ds = ray.data.from_items(requests, override_num_blocks=max(1, len(requests) // engine.batch_size))
    schema = profile_schema(taxonomy, PROVENANCE)

    def to_profiles(batch: pa.Table) -> pa.Table:
        rows = []
        for r in batch.to_pylist():
            row = {**profile_row(r["user_id"], r.get("generated_text"), taxonomy, calibration), **provenance}
            if r.get("__inference_error__"):  # error rows bypass the postprocess: keep the user with the reason
                row["error"] = f"engine: {str(r['__inference_error__'])[:300]}"
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=schema)

    out = processor(ds).map_batches(to_profiles, batch_format="pyarrow", num_cpus=SMALL_CPUS)
    profiles = pa.concat_tables([schema.empty_table(), *ray.get(out.to_arrow_refs())])
    missing = set(docs.column("user_id").to_pylist()) - set(profiles.column("user_id").to_pylist())
    if missing:
        raise RuntimeError(f"{len(missing)} users came back from the engine without a row, e.g. {sorted(missing)[:3]}")
    return profiles.sort_by("user_id")


def _replace_folder(folder: Path, files: dict[str, pa.Table]) -> None:
    """Write into a sibling temp folder, then swap it in (two renames: the partition is missing for that
    instant, never half-written or duplicated)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, table in files.items():
        pq.write_table(table, tmp / name)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
