"""Benchmarks: the Ray job against a plain single-process baseline, side by side in one invocation.

    python -m jobs.bench ingest --users 100000 [--seed 0] [--bad-fraction 0.02] [--data DIR]
    python -m jobs.bench ingest-grouping --users 100000   # hash partitioning vs Ray Data groupby
    python -m jobs.bench label --users 100 [--samples 1] [--model demo]   # Ray job vs raw vllm.LLM (x2)
    python -m jobs.bench infer --users 100 [--model demo|DIR]             # Ray job vs raw vllm.LLM (x2)
    python -m jobs.bench quality [--data builtin|movielens] [--run-dir DIR] [--set KEY=VALUE ...]
    python -m jobs.bench compare RUN_A RUN_B [--stages student_sft,student_rl] [--truth PATH]
    python -m jobs.bench vote --users 1000000 [--attributes 6] [--samples 8] [--teachers 1]  # vs pandas
    python -m jobs.bench dataflow --users 100000,1000000 [--samples 2] [--rate 0]  # stand-in engine
    python -m jobs.bench dataflow --users 10000 --engine tiny [--max-tokens 64]  # the real engine, tiny model
    python -m jobs.bench nightly --users 100000 [--new 0.01]  # incremental night vs full re-read

nightly: a first night on the built-in logs of --users users, then a file of --new x users new users arrives
and the next night runs twice on the same store and date: incremental (the new file and the stored events
of its users) and with nightly.incremental=false (every file read again, as before incremental input).
The student is replaced by the stand-in engine (the figures are the plumbing's), the quality gates are
off. Prints per night: seconds, files and input rows read, stored events read, users profiled, the
driver's peak RSS, and the full re-read's time over the incremental night's. Each night runs in a process
of its own; figures go to runs/bench/nightly-<N>/figures.json.

dataflow: ingest -> label -> aggregate -> infer on the built-in logs of each size (cached under runs/bench/),
with the engine replaced by a stand-in that writes schema-valid outputs without a model (``--rate`` outputs
per second per engine replica; 0, the default, as fast as the plumbing goes), so that the figures are the
plumbing's own. Each stage runs in a process of its own (its driver, as the jobs are); prints per stage
seconds, users/s, the driver's peak RSS and the process tree's peak PSS, each stage's users/s against
ingest's, and the growth of the driver's peak from the smallest size to the largest. Figures go to
runs/bench/dataflow-<N>/figures.json (runs/bench/dataflow-tiny-<N>/ with ``--engine tiny``: the real vLLM
engine on the tiny test model, random weights, as teacher and student, each output cut at
``--max-tokens``, so that the figures are those of the real engine's path at a size a CPU finishes).

quality: runs the real pipeline (vLLM, Ray Train) on a fixed configuration (jobs/configs/bench_quality.yaml
on the built-in data; jobs/configs/movielens.yaml plus held-out users with --data movielens) and prints the
quality ladder: every stage on the same held-out users, macro F1 and AURC with paired-bootstrap 95%
intervals of each difference to the stage before it and to the majority-class reference. The table goes
to <run-dir>/report/ladder.md, the numbers to report/metrics.json ("ladder"), the plots to
report/ladder.png and report/risk_coverage.png. ``--gold N`` (default 100; 0: none) takes the last N users
by user_id of the data's truth (never labeled, never held out) as a gold set: the students' confidence is
refitted on their answers for those users (infer.gold), so the ECE of the held-out users' confidence is that
of the tables with a gold set of N users.

compare: the same stages of two finished runs on the held-out users of both, e.g. a quality benchmark's run
and a copy of it redone from train_sft with another setting (the same teacher labels): per stage, both
runs' macro F1, AURC and coverage and the paired-bootstrap 95% interval of B - A. The taxonomy and the
truth are run A's (its manifest's settings), unless --truth names another file.

ingest: generates the built-in logs (cached under runs/bench/), runs the single-process pyarrow ingest and
the Ray ingest job on the same files, each in its own process, checks that both wrote the same documents
and rejects, and prints wall time, users/s and peak memory (PSS of the whole process tree) of both and the
ratios. Numbers depend on the machine and its load; compare only runs of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile.bench.dataflow import STAGES as DATAFLOW_STAGES
from conf_profile.bench.measure import Measured, run_measured
from conf_profile.core.hardware import BF16_CPU_FLAGS, cpu_flags
from conf_profile.core.ladder import markdown
from conf_profile.core.settings import IngestConfig
from conf_profile.synthetic.dataset import write_dataset


def bench_ingest(args: argparse.Namespace) -> None:
    data = _data(args)
    work = Path("runs/bench") / "ingest-work"
    shutil.rmtree(work, ignore_errors=True)
    py = sys.executable
    runs = {
        "baseline (1 process, pyarrow)": (
            run_measured(
                [py, "-m", "conf_profile.bench.ingest_local", "--logs", str(data / "logs"), "--out", str(work / "base")]
            ),
            work / "base",
        ),
        "ray job (jobs.ingest)": (
            run_measured([py, "-m", "jobs.ingest", "--logs", str(data / "logs"), "--run-dir", str(work / "ray")]),
            work / "ray",
        ),
    }
    for name, (m, _) in runs.items():
        if m.returncode != 0:
            sys.exit(f"bench: {name} failed:\n{m.output[-3000:]}")
    (base, base_dir), (ray_run, ray_dir) = runs.values()
    same = _same_output(base_dir, ray_dir)
    print(f"\ningest benchmark: {args.users:,} users, input {data / 'logs'}")
    print(f"{'':32s} {'seconds':>9s} {'users/s':>9s} {'peak MiB':>9s}")
    for name, (m, _) in runs.items():
        print(f"{name:32s} {m.seconds:9.1f} {args.users / m.seconds:9.0f} {m.peak_mib:9.0f}")
    print(
        f"ratio ray/baseline: time {ray_run.seconds / base.seconds:.2f}x, peak memory "
        f"{ray_run.peak_mib / base.peak_mib:.2f}x; outputs identical: {same}"
    )
    if not same:
        sys.exit(1)


def bench_grouping(args: argparse.Namespace) -> None:
    """The ingest job (hash partitioning through storage) against the textbook Ray Data plan
    (``groupby("user_id").map_groups``) on the same logs. The groupby variant writes documents only (its
    rejects would need a second output), so it does less work than the job it is compared with."""
    data = _data(args)
    work = Path("runs/bench") / "grouping-work"
    shutil.rmtree(work, ignore_errors=True)
    py = sys.executable
    hashp = run_measured([py, "-m", "jobs.ingest", "--logs", str(data / "logs"), "--run-dir", str(work / "hash")])
    group = run_measured(
        [py, "-m", "jobs.bench", "_groupby-variant", "--logs", str(data / "logs"), "--out", str(work / "groupby")]
    )
    for name, m in (("hash partitioning", hashp), ("groupby", group)):
        if m.returncode != 0:
            sys.exit(f"bench: {name} failed:\n{m.output[-3000:]}")
    docs_a = pq.read_table(work / "hash" / "documents", columns=["user_id", "content_hash"])
    docs_b = pq.read_table(work / "groupby" / "documents", columns=["user_id", "content_hash"])
    same = sorted(docs_a.to_pylist(), key=str) == sorted(docs_b.to_pylist(), key=str)
    print(f"\ningest grouping strategies: {args.users:,} users")
    print(f"{'':40s} {'seconds':>9s} {'peak MiB':>9s}")
    print(f"{'hash partitioning (jobs.ingest)':40s} {hashp.seconds:9.1f} {hashp.peak_mib:9.0f}")
    print(f"{'groupby().map_groups (documents only)':40s} {group.seconds:9.1f} {group.peak_mib:9.0f}")
    print(
        f"ratio groupby/hash: time {group.seconds / hashp.seconds:.2f}x, peak memory "
        f"{group.peak_mib / hashp.peak_mib:.2f}x; same documents: {same}"
    )


def _groupby_variant(args: argparse.Namespace) -> None:

    from conf_profile.core.ingest import group_bucket
    from conf_profile.core.settings import IngestConfig
    from conf_profile.log_input import resolve_input
    from conf_profile.raycluster import init_ray
    from conf_profile.stages.ingest import STAGED_SCHEMA, budget_for, documents_table, limits_for, staged_dataset

    cfg = IngestConfig()
    log_input = resolve_input(str(args.logs))
    init_ray()
    budget = budget_for(cfg)

    def documents(group):
        columns = {n: group.column(n).to_pylist() for n in STAGED_SCHEMA.names if n != "bucket"}
        return documents_table(group_bucket(columns, budget)[0])

    staged = staged_dataset(log_input, cfg, limits_for(cfg, datetime.now(UTC)), buckets=1)
    events = staged.filter(lambda r: r["reason"] is None)
    events.groupby("user_id").map_groups(documents, batch_format="pyarrow", num_cpus=cfg.cpus_per_task).write_parquet(
        str(args.out / "documents")
    )


def bench_label(args: argparse.Namespace) -> None:
    """The label job (Ray Data LLM) against plain vllm.LLM.chat with the same engine settings, prompts,
    schema and sampling, each in its own process on the same documents; the raw engine twice, once per
    RAW_ENGINES layout. Tokens/s are output tokens over each process's whole wall time (start-up included),
    and over generation alone for the raw engines."""
    from conf_profile.bench.ingest_local import run_ingest_local
    from conf_profile.models import resolve_model

    work = Path("runs/bench") / f"label-{args.users}"
    shutil.rmtree(work, ignore_errors=True)
    resolve_model(args.model, None)  # a first use converts the embedded model: not part of either run's time
    write_dataset(work / "in", args.users, seed=args.seed, bad_fraction=0.0, files=1)
    run_ingest_local(IngestConfig(), str(work / "in" / "logs"), work)
    teachers = f"label.teachers=[{{name: t, model: {args.model}, samples: {args.samples}}}]"
    py = sys.executable
    ray_run = run_measured(
        [py, "-m", "jobs.label", "--run-dir", str(work), "--set", teachers, "--set", "label.max_users=0",
         "--set", "label.heldout_users=0",
         *(f"--set={o}" for o in args.overrides)]
    )  # fmt: skip
    _keep_log(work, "job", ray_run)
    raws = _raw_runs([py, "-m", "jobs.bench", "_raw-vllm", "--run-dir", str(work), "--model", args.model,
                      "--samples", str(args.samples)], work)  # fmt: skip
    if ray_run.returncode != 0:
        sys.exit(f"bench: ray job failed:\n{ray_run.output[-3000:]}")
    samples = pq.read_table(work / "teacher_samples", columns=["output_tokens", "error"])
    ray_tokens = int(pc.sum(samples.column("output_tokens")).as_py() or 0)
    valid = samples.column("error").null_count
    print(f"\nlabel benchmark: {args.users} users x {args.samples} samples, model {args.model} {args.overrides} "
          f"on {_cpu()}")  # fmt: skip
    print(f"{'':44s} {'seconds':>8s} {'out tokens':>10s} {'tok/s':>7s} {'tok/user':>8s} {'users/s':>8s}")
    rows = [("ray job (jobs.label), whole run", ray_run.seconds, ray_tokens), *_raw_rows(raws)]
    for name, seconds, tokens in rows:
        print(f"{name:44s} {seconds:8.1f} {tokens:10d} {tokens / seconds:7.1f} {tokens / args.users:8.1f} "
              f"{args.users / seconds:8.3f}")  # fmt: skip
    for engine, m, raw in raws:
        ratio = (ray_tokens / ray_run.seconds) / (raw["tokens"] / m.seconds)
        print(f"ratio ray/raw {engine} tokens/s (whole runs): {ratio:.2f}; users/s: {m.seconds / ray_run.seconds:.2f}")
    print(f"schema-valid rows (ray job): {valid}/{samples.num_rows}")
    for engine, _, raw in raws:
        print(f"raw vLLM {engine} prefix-cache hit rate: {raw['prefix_cache_hit_rate']:.2f}")


def bench_infer(args: argparse.Namespace) -> None:
    """The infer job (Ray Data LLM, student prompt and schema, greedy) against plain vllm.LLM.chat on the same
    prompts with the same engine settings (once per RAW_ENGINES layout), each in its own process; users/s
    over each whole run."""
    from conf_profile.bench.ingest_local import run_ingest_local
    from conf_profile.models import resolve_model

    work = Path("runs/bench") / f"infer-{args.users}"
    shutil.rmtree(work, ignore_errors=True)
    write_dataset(work / "in", args.users, seed=args.seed, bad_fraction=0.0, files=1)
    run_ingest_local(IngestConfig(), str(work / "in" / "logs"), work)
    model = str(resolve_model(args.model, None))
    py = sys.executable
    ray_run = run_measured([py, "-m", "jobs.infer", "--run-dir", str(work), "--model", model, "--date", "2000-01-01",
                            *(f"--set={o}" for o in args.overrides)])  # fmt: skip
    _keep_log(work, "job", ray_run)
    raws = _raw_runs([py, "-m", "jobs.bench", "_raw-vllm", "--run-dir", str(work), "--model", args.model,
                      "--kind", "infer", *(f"--set={o}" for o in args.overrides)], work)  # fmt: skip
    if ray_run.returncode != 0:
        sys.exit(f"bench: ray job failed:\n{ray_run.output[-3000:]}")
    profiles = pq.read_table(work / "profiles" / "dt=2000-01-01", columns=["user_id", "error"])
    job_tokens = json.loads((work / "manifest.json").read_text())["stages"]["infer"].get("output_tokens", 0)
    print(f"\ninfer benchmark: {args.users} users, model {args.model} {args.overrides} on {_cpu()}")
    print(f"{'':44s} {'seconds':>8s} {'users/s':>8s} {'out tokens':>10s} {'tok/user':>8s}")
    rows = [("ray job (jobs.infer), whole run", ray_run.seconds, job_tokens), *_raw_rows(raws)]
    for name, seconds, tokens in rows:
        print(f"{name:44s} {seconds:8.1f} {args.users / seconds:8.2f} {tokens:10d} {tokens / args.users:8.1f}")
    for engine, m, _ in raws:
        print(f"ratio ray/raw {engine} users/s (whole runs): {m.seconds / ray_run.seconds:.2f}")
    print(f"profiles written: {profiles.num_rows}/{args.users} users, {profiles.column('error').null_count} parsed")


# The two ways to run plain vllm.LLM on a CPU that the engine benchmarks compare the jobs with: vLLM's default,
# the engine core and the model worker each in a process of its own (as the jobs' engines run: ray.data.llm's
# asynchronous engine always has its engine core in a process of its own, and vLLM's CPU backend then puts
# the model in another), and everything in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0), the
# fastest way on a small CPU.
RAW_ENGINES = {"multiprocess": "1", "in-process": "0"}


def _raw_runs(cmd: list[str], work: Path) -> list[tuple[str, Measured, dict]]:
    """``cmd`` (a _raw-vllm command) run once per RAW_ENGINES entry, one after the other, each run's output
    kept in ``work``/raw-<engine>.log: (engine, its measurement, its JSON result line). Exits with the output
    of a failed run."""
    out = []
    for engine in RAW_ENGINES:
        m = run_measured([*cmd, "--engine", engine])
        _keep_log(work, f"raw-{engine}", m)
        if m.returncode != 0:
            sys.exit(f"bench: raw vllm ({engine}) failed:\n{m.output[-3000:]}")
        # its result is its last JSON line (vLLM's engine processes may log after it, while they shut down)
        result = next(line for line in reversed(m.output.splitlines()) if line.startswith('{"tokens"'))
        out.append((engine, m, json.loads(result)))
    return out


def _raw_rows(raws: list[tuple[str, Measured, dict]]) -> list[tuple[str, float, int]]:
    """The engine benchmarks' table rows of the raw runs: (name, seconds, output tokens), whole run and
    generation alone for each layout."""
    rows = []
    for engine, m, raw in raws:
        rows += [(f"raw vllm.LLM {engine}, whole run", m.seconds, raw["tokens"]),
                 (f"raw vllm.LLM {engine}, generation only", raw["seconds"], raw["tokens"])]  # fmt: skip
    return rows


def _keep_log(work: Path, name: str, m: Measured) -> None:
    """A run's output (Ray's, vLLM's, the job's stage timings) into ``work``/<name>.log, to read afterwards,
    written as soon as the run ends (a benchmark that stops at a failed run keeps the logs so far)."""
    (work / f"{name}.log").write_text(m.output)
    print(f"bench: {name}'s output is in {work / f'{name}.log'}", file=sys.stderr)


def _raw_vllm(args: argparse.Namespace) -> None:
    """Label (or profile, --kind infer) the same documents with plain vllm.LLM (the jobs' settings on CPU)."""
    import os
    import time

    from conf_profile.core.config import build
    from conf_profile.core.hardware import cpu_flags, enforce_eager, engine_dtype
    from conf_profile.core.labeling import output_schema, teacher_messages
    from conf_profile.core.settings import Config, EngineConfig, TeacherConfig
    from conf_profile.core.student import student_messages, student_schema
    from conf_profile.core.taxonomy import load_taxonomy
    from conf_profile.engines import engine_env
    from conf_profile.models import resolve_model

    taxonomy, engine, teacher = load_taxonomy(), EngineConfig(), TeacherConfig()
    docs = pq.read_table(args.run_dir / "documents", columns=["user_id", "document"]).sort_by("user_id")
    messages, schema = (student_messages, student_schema) if args.kind == "infer" else (teacher_messages, output_schema)
    infer = build(Config, overrides=args.overrides).infer  # the infer job's settings, --set included
    samples = infer.samples if args.kind == "infer" else args.samples
    engine = infer.engine if args.kind == "infer" else engine
    # The environment the jobs give their CPU engines (before vLLM and torch read it), and the engine's layout.
    for key, value in engine_env(engine, "cpu").items():
        os.environ.setdefault(key, value)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = RAW_ENGINES[args.engine]
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    conversations = [messages(taxonomy, d) for d in docs.column("document").to_pylist() for _ in range(samples)]
    dtype = engine_dtype(engine.dtype, "cpu", cpu_flags())  # as the jobs resolve it
    llm = LLM(model=str(resolve_model(args.model, None)), max_model_len=engine.max_model_len, dtype=dtype,
              enforce_eager=enforce_eager(engine.enforce_eager, "cpu"), enable_prefix_caching=True, seed=0,
              disable_log_stats=False,
              structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True})  # fmt: skip
    structured = StructuredOutputsParams(json=json.dumps(schema(taxonomy)))
    if args.kind == "infer":
        params = SamplingParams(
            temperature=infer.temperature, max_tokens=infer.max_tokens, structured_outputs=structured
        )
    else:
        params = SamplingParams(temperature=teacher.temperature, top_p=teacher.top_p, max_tokens=teacher.max_tokens,
                                structured_outputs=structured)  # fmt: skip
    started = time.monotonic()
    outputs = llm.chat(conversations, params, use_tqdm=False)
    seconds = time.monotonic() - started
    metrics = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    queries = metrics.get("vllm:prefix_cache_queries", 0) or 0
    hits = metrics.get("vllm:prefix_cache_hits", 0) or 0
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(
        json.dumps({"tokens": tokens, "seconds": seconds, "prefix_cache_hit_rate": hits / queries if queries else 0.0})
    )


QUALITY_CONFIGS = {
    "builtin": ["--config", "jobs/configs/bench_quality.yaml"],
    # MovieLens: the teacher labels 96 users for training and 200 more for scoring; the students profile those.
    "movielens": ["--config", "jobs/configs/movielens.yaml", "--set", "label.heldout_users=200",
                  "--set", "infer.exclude_labeled=true", "--set", "infer.max_users=200"],
}  # fmt: skip


def bench_quality(args: argparse.Namespace) -> None:
    """The pipeline on a fixed configuration, then its quality ladder (see the module docstring)."""
    import platform
    import time

    run_dir = args.run_dir or Path("runs/bench") / f"quality-{args.data}"
    cmd = [sys.executable, "-m", "jobs.pipeline", *QUALITY_CONFIGS[args.data], "--run-dir", str(run_dir),
           *(f"--set={o}" for o in args.overrides)]  # fmt: skip
    if args.data == "movielens" and not Path("data/movielens/truth.parquet").exists():
        sys.exit("bench quality --data movielens: run python -m jobs.import_movielens --out data/movielens first")
    started = time.monotonic()
    if args.gold:
        cmd.append(f"--set=infer.gold={_gold_users(args, cmd, run_dir)}")
    print(f"bench quality: {' '.join(cmd)}", file=sys.stderr, flush=True)
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"bench quality: the pipeline failed; its manifest is in {run_dir}")
    seconds = time.monotonic() - started
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text(encoding="utf-8"))
    lad = metrics.get("ladder") or {}
    if not lad.get("stages"):
        sys.exit(f"bench quality: no ladder in {run_dir / 'report'} (no held-out users with truth?)")
    table = markdown(lad["stages"])
    cpu = _cpu()
    gold = f", students' confidence refitted on {args.gold} gold users" if args.gold else ""
    header = (f"quality ladder ({args.data}): {lad['users']} held-out users{gold}, wall time {seconds / 60:.1f} min "
              f"on {cpu} ({platform.machine()})")  # fmt: skip
    (run_dir / "report" / "ladder.md").write_text(f"{header}\n\n{table}\n", encoding="utf-8")
    print(f"\n{header}\n{table}\nreport: {run_dir / 'report' / 'index.html'}")


def bench_compare(args: argparse.Namespace) -> None:
    """Two runs' stages side by side on the same held-out users (see the module docstring)."""
    from conf_profile.core.config import build
    from conf_profile.core.settings import Config
    from conf_profile.core.taxonomy import load_taxonomy
    from conf_profile.stages.evaluate import compare_runs, truth_path
    from conf_profile.storage import MANIFEST

    for run in (args.run_a, args.run_b):
        if not (run / MANIFEST).is_file():
            sys.exit(f"bench compare: {run}: not a run directory (no {MANIFEST})")
    cfg = build(Config, json.loads((args.run_a / MANIFEST).read_text(encoding="utf-8")).get("config") or {})
    truth = str(args.truth) if args.truth else truth_path(cfg, args.run_a)
    if truth is None:
        sys.exit(f"bench compare: no truth for {args.run_a} (its input.truth is empty): give --truth")
    stages = [s for s in args.stages.split(",") if s] if args.stages else None
    try:
        out = compare_runs(args.run_a, args.run_b, truth, load_taxonomy(cfg.taxonomy.path), stages)
    except (FileNotFoundError, ValueError) as exc:  # a missing run part; a truth file without the attributes
        sys.exit(f"bench compare: {exc}")

    def cell(x: dict) -> str:
        return f"{x['diff']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]"

    lines = [f"A = {args.run_a}, B = {args.run_b}: {out['users']} held-out users of both, paired bootstrap 95%",
             "", "| stage | F1 A | F1 B | F1 B - A | AURC A | AURC B | AURC B - A | coverage A | coverage B |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in out["stages"].items():
        a, b = row["a"], row["b"]
        cells = [f"{a['f1']:.3f}", f"{b['f1']:.3f}", cell(row["f1"]), f"{a['aurc']:.3f}", f"{b['aurc']:.3f}",
                 cell(row["aurc"]), f"{a['coverage']:.2f}", f"{b['coverage']:.2f}"]  # fmt: skip
        lines.append(f"| {name} | {' | '.join(cells)} |")
    print("\n".join(lines))
    print(json.dumps(out))


def _gold_users(args: argparse.Namespace, cmd: list[str], run_dir: Path) -> Path:
    """<run-dir>/gold.parquet: the last ``args.gold`` users by user_id of the data's truth (the teacher labels
    and holds out the first users by user_id, so these are neither). The built-in data is generated first
    (the pipeline up to builtin_data) for its truth."""
    import pyarrow.parquet as pq

    if args.data == "movielens":
        truth_file = Path("data/movielens/truth.parquet")  # bench_quality checked that it exists
    else:
        if subprocess.run([*cmd, "--to", "builtin_data"]).returncode != 0:
            sys.exit(f"bench quality: generating the built-in data failed; its manifest is in {run_dir}")
        truth_file = run_dir / "input" / "truth.parquet"
    truth = pq.read_table(truth_file).sort_by("user_id")
    gold = truth.slice(max(0, truth.num_rows - args.gold))
    run_dir.mkdir(parents=True, exist_ok=True)  # a new run directory: the pipeline has not made it yet
    pq.write_table(gold, run_dir / "gold.parquet")
    print(f"bench quality: gold set {run_dir / 'gold.parquet'}: {gold.num_rows} users", file=sys.stderr, flush=True)
    return run_dir / "gold.parquet"


def bench_vote(args: argparse.Namespace) -> None:
    """aggregate_tables (vote, calibration fit and apply, SFT and RL sets) against the same stage written
    with pandas groupbys (conf_profile.bench.vote_pandas), each in its own process on the same generated
    teacher_samples; checks that both wrote the same tables, prints seconds per phase, peak memory (PSS)
    and the ratios. A side whose memory passes ``--limit-mib`` (default: 90% of the memory available when it
    starts) is stopped there, and the ratios become the bounds that its time and memory until then give."""
    import platform

    import psutil

    if not 1 <= args.attributes <= len(_bench_taxonomy(None).attributes):
        sys.exit(f"bench vote: --attributes must be 1..{len(_bench_taxonomy(None).attributes)} (the built-in taxonomy)")
    work = Path("runs/bench") / f"vote-{args.users}-{args.attributes}-{args.samples}-{args.teachers}-{args.seed}"
    _vote_inputs(args, work / "input")  # in a function: the generated table is freed before the two runs
    py = sys.executable
    runs = {}
    for impl in ("project", "pandas"):
        out = work / impl
        shutil.rmtree(out, ignore_errors=True)
        limit = args.limit_mib or 0.9 * psutil.virtual_memory().available / 2**20
        m = run_measured([py, "-m", "jobs.bench", "_vote-impl", impl, "--work", str(work),
                          "--attributes", str(args.attributes)], interval=0.2, limit_mib=limit)  # fmt: skip
        if m.stopped_at_mib is None and m.returncode != 0:
            sys.exit(f"bench vote: the {impl} run failed:\n{m.output[-3000:]}")
        if m.stopped_at_mib is not None and impl == "project":
            sys.exit(f"bench vote: the project run passed {limit:,.0f} MiB after {m.seconds:.1f} s; try fewer --users")
        runs[impl] = (m, None if m.stopped_at_mib else json.loads(m.output.strip().splitlines()[-1]))
    (proj, p_phases), (base, b_phases) = runs["project"], runs["pandas"]
    print(f"\nvote benchmark: {args.users:,} users x {args.attributes} attributes x {args.teachers} teacher(s) x "
          f"{args.samples} samples ({args.users * args.teachers * args.samples:,} sample rows) on {_cpu()} "
          f"({platform.machine()}, {psutil.virtual_memory().total / 2**30:.0f} GiB)")  # fmt: skip
    phases = ("read", "vote", "calibration", "sft_rl", "write")
    print(f"{'':26s} " + " ".join(f"{p:>11s}" for p in (*phases, "compute", "whole run", "peak MiB")))
    for name, (m, ph) in (("project (aggregate_tables)", runs["project"]), ("pandas groupby", runs["pandas"])):
        if ph is None:
            print(f"{name:26s} stopped when its memory passed {m.stopped_at_mib:,.0f} MiB, after {m.seconds:.1f} s")
            continue
        compute = sum(ph[p] for p in ("vote", "calibration", "sft_rl"))
        cells = [*(f"{ph[p]:11.2f}" for p in phases), f"{compute:11.2f}", f"{m.seconds:11.1f}", f"{m.peak_mib:11.0f}"]
        print(f"{name:26s} " + " ".join(cells))
    if b_phases is None:
        print(
            f"speed-up pandas/project: whole run more than {base.seconds / proj.seconds:.1f}x (pandas did not "
            f"finish); peak memory project/pandas less than {proj.peak_mib / base.stopped_at_mib:.2f}x"
        )
        print("same tables: not checked (the pandas run did not finish)")
        return
    ratio = {p: b_phases[p] / max(p_phases[p], 1e-9) for p in ("vote", "calibration", "sft_rl")}
    compute_ratio = sum(b_phases[p] for p in ratio) / max(sum(p_phases[p] for p in ratio), 1e-9)
    print(
        "speed-up pandas/project: "
        + ", ".join(f"{p} {r:.1f}x" for p, r in ratio.items())
        + f", compute {compute_ratio:.1f}x, whole run {base.seconds / proj.seconds:.1f}x; "
        + f"peak memory project/pandas {proj.peak_mib / base.peak_mib:.2f}x"
    )
    same = _same_aggregation(work / "project", work / "pandas")
    print(f"same votes, calibration, SFT and RL tables: {same}")
    if same is not True:
        sys.exit(1)


def _vote_inputs(args: argparse.Namespace, inputs: Path) -> None:
    """The generated teacher_samples and documents of bench vote (kept between runs of the same size)."""
    from conf_profile.synthetic.samples import teacher_samples_table

    if (inputs / "documents.parquet").exists():
        return
    print(f"bench vote: generating {args.users:,} users x {args.teachers} teacher(s) x {args.samples} samples "
          f"into {inputs}", file=sys.stderr, flush=True)  # fmt: skip
    inputs.mkdir(parents=True, exist_ok=True)
    samples = teacher_samples_table(_bench_taxonomy(args.attributes), args.users, args.samples, args.teachers,
                                    seed=args.seed)  # fmt: skip
    pq.write_table(samples, inputs / "samples.parquet")
    ids = samples.column("user_id").unique()
    del samples
    ids = ids.filter(pa.array(np.arange(len(ids)) % 50 != 7))  # 2% of the users have no document
    docs = pc.binary_join_element_wise('log of "', ids, '": watched a cooking show\nsearched strollers', "")
    pq.write_table(pa.table({"user_id": ids, "document": docs}), inputs / "documents.parquet")


def bench_dataflow(args: argparse.Namespace) -> None:
    """Each size in its own process (``_dataflow-run``): see the module docstring."""
    import platform

    from conf_profile.models import tiny_model_dir

    try:
        sizes = [int(n) for n in str(args.users).split(",")]
    except ValueError:
        sys.exit(f"bench dataflow: --users {args.users}: give user counts separated by commas, e.g. 100000,1000000")
    if not sizes or min(sizes) < 1 or args.samples < 1 or args.rate < 0 or args.max_tokens < 16:
        sys.exit("bench dataflow: --users must be >= 1, --samples >= 1, --rate >= 0 and --max-tokens >= 16")
    model = str(tiny_model_dir(None))  # built here, once: the stand-in never loads it, the stages check it exists
    results = {}
    for n in sizes:
        data = _data(argparse.Namespace(users=n, seed=args.seed, bad_fraction=args.bad_fraction, data=None))
        work = Path("runs/bench") / (f"dataflow-{n}" if args.engine == "stand-in" else f"dataflow-tiny-{n}")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results[n] = []
        for stage in DATAFLOW_STAGES:  # each stage its own driver process, as the jobs are
            cmd = [sys.executable, "-m", "jobs.bench", "_dataflow-run", stage, "--logs", str(data / "logs"), "--work",
                   str(work), "--samples", str(args.samples), "--rate", str(args.rate), "--model", model,
                   "--engine", args.engine, "--max-tokens", str(args.max_tokens)]  # fmt: skip
            print(f"bench dataflow: {n:,} users: {stage}", file=sys.stderr, flush=True)
            done = subprocess.run(cmd)
            if done.returncode != 0:
                sys.exit(f"bench dataflow: {stage} at {n:,} users failed (exit {done.returncode})")
            results[n].append(json.loads((work / f"figures-{stage}.json").read_text(encoding="utf-8")))
        (work / "figures.json").write_text(json.dumps(results[n], indent=2), encoding="utf-8")
    rate = f"{args.rate:g} outputs/s per replica" if args.rate else "no delay"
    engine = (f"stand-in engine ({rate})" if args.engine == "stand-in"
              else f"vLLM engine, tiny model, at most {args.max_tokens} output tokens")  # fmt: skip
    print(f"\ndataflow benchmark: {args.samples} teacher samples per user, {engine}, on {_cpu()} "
          f"({platform.machine()})")  # fmt: skip
    header = ("users", "stage", "seconds", "users/s", "vs ingest", "rows out", "driver MiB", "tree MiB")
    print(f"{header[0]:>10s} {header[1]:10s} " + " ".join(f"{h:>11s}" for h in header[2:]))
    for n, figures in results.items():
        ingest_rate = figures[0]["users"] / max(figures[0]["seconds"], 1e-9)
        for f in figures:
            speed = f["users"] / max(f["seconds"], 1e-9)
            print(f"{n:>10,} {f['stage']:10s} {f['seconds']:11.1f} {speed:11.0f} {speed / ingest_rate:10.2f}x "
                  f"{f['rows']:11,} {f['driver_peak_mib']:11.0f} {f['tree_peak_mib']:11.0f}")  # fmt: skip
    if len(results) > 1:
        small, large = results[min(results)], results[max(results)]
        driver = max(f["driver_peak_mib"] for f in large) / max(max(f["driver_peak_mib"] for f in small), 1.0)
        tree = max(f["tree_peak_mib"] for f in large) / max(max(f["tree_peak_mib"] for f in small), 1.0)
        lo, hi = min(results), max(results)
        print(f"peak memory {hi:,} users / {lo:,} users ({hi / lo:g}x the users): driver {driver:.2f}x, "
              f"process tree {tree:.2f}x")  # fmt: skip
        for stage in ("ingest", "label", "aggregate", "infer"):
            a = next(f for f in small if f["stage"] == stage)["driver_peak_mib"]
            b = next(f for f in large if f["stage"] == stage)["driver_peak_mib"]
            print(f"  driver peak in {stage}: {a:,.0f} -> {b:,.0f} MiB ({b / max(a, 1.0):.2f}x)")


def _dataflow_run(args: argparse.Namespace) -> None:
    from conf_profile.bench.dataflow import bench_config, figures_json, run_stage
    from conf_profile.bench.stand_in import StandInEngine
    from conf_profile.engines import use_stand_in

    if args.engine == "stand-in":
        use_stand_in(StandInEngine(args.rate))
    # the real engine: each output cut at --max-tokens (the tiny model's random text rarely ends by itself)
    max_tokens = args.max_tokens if args.engine == "tiny" else None
    cfg = bench_config(str(args.logs), args.samples, args.model, max_tokens=max_tokens)
    figures = run_stage(args.stage, cfg, args.work, args.model)
    out = args.work / f"figures-{args.stage}.json"
    out.write_text(json.dumps(figures_json(figures), indent=2), encoding="utf-8")


NIGHTS = (("2026-01-01", "first night", []), ("2026-01-02", "incremental", []),
          ("2026-01-02", "full re-read", ["nightly.incremental=false"]))  # fmt: skip


def bench_nightly(args: argparse.Namespace) -> None:
    import platform

    from conf_profile.models import tiny_model_dir

    if args.users < 1 or not 0 < args.new <= 1:
        sys.exit("bench nightly: --users must be >= 1 and --new in (0, 1]")
    model = str(tiny_model_dir(None))  # the stand-in never loads it; the job checks it exists
    history = _data(argparse.Namespace(users=args.users, seed=args.seed, bad_fraction=args.bad_fraction, data=None))
    work = Path("runs/bench") / f"nightly-{args.users}"
    shutil.rmtree(work, ignore_errors=True)
    logs = work / "logs"
    logs.mkdir(parents=True)
    for f in sorted((history / "logs").glob("*.parquet")):  # the history, linked (not copied)
        os.link(f, logs / f.name)
    new_users = max(1, round(args.users * args.new))
    write_dataset(work / "new", new_users, seed=args.seed + 1, bad_fraction=args.bad_fraction, files=1)
    arrived = pa.concat_tables([pq.read_table(f) for f in sorted((work / "new" / "logs").glob("*.parquet"))])
    ids = pc.binary_join_element_wise(pa.scalar("new-"), arrived.column("user_id"), "")  # ids unseen in the history
    arrived = arrived.set_column(arrived.column_names.index("user_id"), "user_id", ids)
    results = []
    for i, (date, mode, overrides) in enumerate(NIGHTS):
        if i == 1:
            pq.write_table(arrived, logs / "part-arrived.parquet")
        out = work / f"figures-{i}.json"
        cmd = [sys.executable, "-m", "jobs.bench", "_nightly-run", "--logs", str(logs), "--store", str(work / "store"),
               "--date", date, "--model", model, "--out", str(out)]  # fmt: skip
        cmd += [a for o in overrides for a in ("--set", o)]
        print(f"bench nightly: {args.users:,} users: {date} {mode}", file=sys.stderr, flush=True)
        if subprocess.run(cmd).returncode != 0:
            sys.exit(f"bench nightly: the {mode} night failed")
        results.append({"night": date, "mode": mode, **json.loads(out.read_text(encoding="utf-8"))})
    (work / "figures.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\nnightly benchmark: {args.users:,} users of history, then {arrived.num_rows:,} rows of {new_users:,} new "
          f"users arrive; stand-in engine, on {_cpu()} ({platform.machine()})")  # fmt: skip
    header = ("night", "mode", "seconds", "files read", "rows read", "stored ev.", "profiled", "driver MiB")
    print(f"{header[0]:10s} {header[1]:13s} " + " ".join(f"{h:>11s}" for h in header[2:]))
    for r in results:
        print(f"{r['night']:10s} {r['mode']:13s} {r['seconds']:11.1f} {r['files_read']:11,} {r['rows_read']:11,} "
              f"{r['stored_events_read']:11,} {r['users_active']:11,} {r['driver_peak_mib']:11.0f}")  # fmt: skip
    inc, full = results[1], results[2]
    print(f"full re-read / incremental: {full['seconds'] / max(inc['seconds'], 1e-9):.1f}x the time, "
          f"{full['rows_read'] / max(inc['rows_read'], 1):.0f}x the input rows; the same users profiled: "
          f"{inc['users_active'] == full['users_active']}")  # fmt: skip


def _nightly_run(args: argparse.Namespace) -> None:
    """One night with the stand-in engine, timed after Ray has started; its figures as JSON in --out."""
    import time

    from conf_profile.bench.dataflow import _Sampler
    from conf_profile.bench.stand_in import StandInEngine
    from conf_profile.core.config import build
    from conf_profile.core.settings import Config
    from conf_profile.engines import use_stand_in
    from conf_profile.raycluster import init_ray
    from conf_profile.stages.nightly import run_nightly

    use_stand_in(StandInEngine(0.0))
    gates_off = {"max_parse_failure_rate": 1.0, "max_abstain_rate": 1.0, "max_drift": 1.0}
    cfg = build(Config, {"nightly": {"root": str(args.store), **gates_off}}, args.overrides)
    init_ray(cfg.ray)
    with _Sampler(0.5) as sampler:
        sampler.take()
        started = time.monotonic()
        entry = run_nightly(cfg, str(args.logs), args.date, args.model)
        seconds = time.monotonic() - started
        driver, _ = sampler.take()
    figures = {"seconds": round(seconds, 1), "driver_peak_mib": round(driver), "users_active": entry["users_active"],
               **entry["input"]}  # fmt: skip
    args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")


def _bench_taxonomy(attributes: int | None):
    """The built-in taxonomy, or its first ``attributes`` attributes."""
    from conf_profile.core.taxonomy import load_taxonomy, taxonomy_from_dict

    full = load_taxonomy()
    if attributes is None or attributes == len(full.attributes):
        return full
    return taxonomy_from_dict({"name": full.name, "attributes": full.to_dict()["attributes"][:attributes]})


def _vote_impl(args: argparse.Namespace) -> None:
    """One side of bench vote: read, aggregate, write; prints its seconds per phase as JSON."""
    import time

    from conf_profile.core.settings import AggregateConfig

    taxonomy, acfg = _bench_taxonomy(args.attributes), AggregateConfig()
    started = time.perf_counter()
    samples = pq.read_table(args.work / "input" / "samples.parquet")
    documents = pq.read_table(args.work / "input" / "documents.parquet")
    out = args.work / args.impl
    out.mkdir(parents=True)
    if args.impl == "project":
        from conf_profile.stages.aggregate import aggregate_tables

        read = time.perf_counter() - started
        result = aggregate_tables(samples, documents, taxonomy, acfg, "teacher0")
        tables, cal, seconds = (result.votes, result.sft, result.rl), result.calibration, result.seconds
        written = time.perf_counter()
    else:
        from conf_profile.bench.vote_pandas import aggregate_pandas

        frames = samples.to_pandas(), documents.to_pandas()  # pandas reads Parquet through pyarrow too
        read = time.perf_counter() - started
        *frames_out, cal, seconds = _pandas_tables(aggregate_pandas(*frames, taxonomy, "teacher0",
            list(acfg.confidence_weights), acfg.eval_percent, acfg.sft_min_mean_level, acfg.rl_easy_min_confidence,
            acfg.rl_min_mean_level))  # fmt: skip
        written = time.perf_counter()
        tables = tuple(frames_out)
    for name, table in zip(("votes", "sft", "rl"), tables, strict=True):
        pq.write_table(table, out / f"{name}.parquet")
    (out / "calibration.json").write_text(json.dumps(cal["attributes"], sort_keys=True), encoding="utf-8")
    print(json.dumps({"read": read, **seconds, "write": time.perf_counter() - written}))


def _pandas_tables(result):
    import pandas as pd

    votes, cal, sft, rl, seconds = result
    arrow = [pa.Table.from_pandas(pd.DataFrame(f), preserve_index=False) for f in (votes, sft, rl)]
    return (*arrow, cal, seconds)


def _same_aggregation(a: Path, b: Path) -> bool | str:
    """True when both runs wrote the same tables (floats to 1e-9), else what differs."""
    from conf_profile.core.aggregate import VOTE_COLUMNS

    if not _close(json.loads((a / "calibration.json").read_text()), json.loads((b / "calibration.json").read_text())):
        return "calibration differs"
    checks = {"votes": [*VOTE_COLUMNS, "level", "confidence"], "sft": ["user_id", "split", "messages", "mean_level"],
              "rl": None}  # fmt: skip
    for name, columns in checks.items():
        x, y = pq.read_table(a / f"{name}.parquet"), pq.read_table(b / f"{name}.parquet")
        for column in columns or x.column_names:
            if x.num_rows != y.num_rows:
                return f"{name}: {x.num_rows} rows against {y.num_rows}"
            if column not in y.column_names:
                return f"{name}.{column} missing"
            p, q = x.column(column), y.column(column)
            if pa.types.is_floating(p.type) or pa.types.is_floating(q.type):
                u = p.to_numpy(zero_copy_only=False).astype(np.float64)
                v = q.to_numpy(zero_copy_only=False).astype(np.float64)
                bad = ~np.isclose(u, v, rtol=1e-9, atol=1e-12, equal_nan=True)
            elif pa.types.is_integer(p.type) or pa.types.is_integer(q.type):
                bad = ~pc.fill_null(pc.equal(pc.cast(p, pa.int64()), pc.cast(q, pa.int64())),
                                    pc.and_(pc.is_null(p), pc.is_null(q))).to_numpy(zero_copy_only=False)  # fmt: skip
            else:  # strings and lists: exact (pandas may have written large_string for string)
                try:
                    q = q if q.type == p.type else q.cast(p.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    return f"{name}.{column}: type {p.type} against {q.type}"
                if not pa.types.is_string(p.type):
                    bad = np.asarray([not p.equals(q)])  # lists (the chats): the whole column at once
                else:
                    same = pc.fill_null(pc.equal(p, q), pc.and_(pc.is_null(p), pc.is_null(q)))
                    bad = ~same.to_numpy(zero_copy_only=False)
            if bad.any():
                return f"{name}.{column}: {int(bad.sum())} rows differ"
    return True


def _close(x, y) -> bool:
    """Equal JSON values, floats to 1e-9."""
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(u, v) for u, v in zip(x, y, strict=True))
    if isinstance(x, float) or isinstance(y, float):
        return x is not None and y is not None and bool(np.isclose(x, y, rtol=1e-9, atol=1e-12))
    return x == y


def _cpu() -> str:
    """The CPU model and the flags that decide bf16 speed (AVX-512 BF16 / AMX or AVX2 only: docs/architecture.md 3)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = cpu_flags(text)
    wanted = [f for f in ("avx2", "avx512f", *BF16_CPU_FLAGS) if f in flags]
    return f"{model} [{' '.join(wanted) or 'no avx2'}], {os.cpu_count()} cores"


def _data(args: argparse.Namespace) -> Path:
    data = args.data or Path("runs/bench") / f"logs-{args.users}-{args.seed}-{args.bad_fraction}"
    if not (data / "dataset.json").exists():
        print(f"bench: generating {args.users:,} users into {data}", file=sys.stderr)
        write_dataset(data, args.users, seed=args.seed, bad_fraction=args.bad_fraction, overwrite=True)
    return data


def _same_output(a: Path, b: Path) -> bool:
    def docs(folder: Path):
        t = pq.read_table(folder / "documents", columns=["user_id", "content_hash", "n_events"])
        return t.take(pc.sort_indices(t, [("user_id", "ascending")])).to_pylist()

    def reasons(folder: Path):
        t = pq.read_table(folder / "rejects", columns=["reason", "event_id"])
        return sorted(
            zip(t.column("reason").to_pylist(), t.column("event_id").to_pylist(), strict=True),
            key=lambda r: (r[0], r[1] or ""),
        )

    return docs(a) == docs(b) and reasons(a) == reasons(b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("ingest", "Ray ingest vs single-process pyarrow ingest"),
        ("ingest-grouping", "hash partitioning vs Ray Data groupby for ingest"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--users", type=int, default=100_000)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--bad-fraction", type=float, default=0.02)
        p.add_argument("--data", type=Path, help="use these logs (a make_logs output folder) instead")
    label = sub.add_parser("label", help="Ray label job vs plain vllm.LLM on the same documents")
    label.add_argument("--users", type=int, default=100)
    label.add_argument("--samples", type=int, default=1)
    label.add_argument("--model", default="demo")
    label.add_argument("--seed", type=int, default=0)
    label.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                       help="extra config for the Ray job, e.g. label.engine.batch_size=32")  # fmt: skip
    raw = sub.add_parser("_raw-vllm", help=argparse.SUPPRESS)
    raw.add_argument("--run-dir", type=Path, required=True)
    raw.add_argument("--model", default="demo")
    raw.add_argument("--samples", type=int, default=1)
    raw.add_argument("--kind", choices=("label", "infer"), default="label")
    raw.add_argument("--engine", choices=tuple(RAW_ENGINES), default="in-process")
    raw.add_argument("--set", action="append", default=[], dest="overrides")
    infer = sub.add_parser("infer", help="Ray infer job vs plain vllm.LLM on the same prompts")
    infer.add_argument("--users", type=int, default=100)
    infer.add_argument("--model", default="demo", help="demo, tiny, or a student model folder (e.g. runs/X/models/sft)")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                       help="extra config for the Ray job, e.g. infer.engine.batch_size=32")  # fmt: skip
    vote = sub.add_parser("vote", help="aggregation (vote, calibration, SFT/RL sets) vs a pandas groupby version")
    vote.add_argument("--users", type=int, default=1_000_000)
    vote.add_argument("--attributes", type=int, default=6)
    vote.add_argument("--samples", type=int, default=8)
    vote.add_argument("--teachers", type=int, default=1)
    vote.add_argument("--seed", type=int, default=0)
    vote.add_argument("--limit-mib", type=float, default=None,
                      help="stop a side whose memory passes this (default: 90%% of the memory available)")  # fmt: skip
    impl = sub.add_parser("_vote-impl", help=argparse.SUPPRESS)
    impl.add_argument("impl", choices=("project", "pandas"))
    impl.add_argument("--work", type=Path, required=True)
    impl.add_argument("--attributes", type=int, required=True)
    quality = sub.add_parser("quality", help="the pipeline on a fixed config: every stage on the same held-out users")
    quality.add_argument("--data", choices=sorted(QUALITY_CONFIGS), default="builtin")
    quality.add_argument(
        "--gold",
        type=int,
        default=100,
        metavar="N",
        help="gold set: the last N users by id; the students' confidence is refitted on it (0: none)",
    )
    quality.add_argument("--run-dir", type=Path, help="default: runs/bench/quality-<data> (a re-run resumes it)")
    quality.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE",
                         help="extra config for the pipeline (it changes the benchmark: report it)")  # fmt: skip
    compare = sub.add_parser("compare", help="the same stages of two runs on the held-out users of both")
    compare.add_argument("run_a", type=Path, metavar="RUN_A")
    compare.add_argument("run_b", type=Path, metavar="RUN_B")
    compare.add_argument("--stages", help="comma-separated stages (default: every stage both runs have)")
    compare.add_argument("--truth", type=Path, help="truth Parquet (default: run A's input.truth or built-in truth)")
    flow = sub.add_parser("dataflow", help="ingest -> label -> aggregate -> infer with a stand-in engine, per size")
    flow.add_argument("--users", default="100000,1000000", help="user counts, comma-separated")
    flow.add_argument("--samples", type=int, default=2, help="teacher samples per user (default 2)")
    flow.add_argument("--rate", type=float, default=0.0,
                      help="stand-in outputs per second per engine replica (default 0: no delay)")  # fmt: skip
    flow.add_argument("--seed", type=int, default=0)
    flow.add_argument("--bad-fraction", type=float, default=0.02)
    flow.add_argument("--engine", choices=("stand-in", "tiny"), default="stand-in",
                      help="stand-in (default: no model) or tiny: the real vLLM engine, tiny test model")  # fmt: skip
    flow.add_argument("--max-tokens", type=int, default=64,
                      help="with --engine tiny: output tokens per sample and per profile (default 64)")  # fmt: skip
    flow_run = sub.add_parser("_dataflow-run", help=argparse.SUPPRESS)
    flow_run.add_argument("stage", choices=DATAFLOW_STAGES)
    flow_run.add_argument("--logs", type=Path, required=True)
    flow_run.add_argument("--work", type=Path, required=True)
    flow_run.add_argument("--samples", type=int, required=True)
    flow_run.add_argument("--rate", type=float, required=True)
    flow_run.add_argument("--model", required=True)
    flow_run.add_argument("--engine", choices=("stand-in", "tiny"), required=True)
    flow_run.add_argument("--max-tokens", type=int, required=True)
    nightly = sub.add_parser("nightly", help="an incremental night vs a full re-read of the history (stand-in engine)")
    nightly.add_argument("--users", type=int, default=100_000, help="users in the history (default 100000)")
    nightly.add_argument("--new", type=float, default=0.01, help="new users that arrive, as a share of --users")
    nightly.add_argument("--seed", type=int, default=0)
    nightly.add_argument("--bad-fraction", type=float, default=0.02)
    night_run = sub.add_parser("_nightly-run", help=argparse.SUPPRESS)
    night_run.add_argument("--logs", type=Path, required=True)
    night_run.add_argument("--store", type=Path, required=True)
    night_run.add_argument("--date", required=True)
    night_run.add_argument("--model", required=True)
    night_run.add_argument("--out", type=Path, required=True)
    night_run.add_argument("--set", action="append", default=[], dest="overrides")
    variant = sub.add_parser("_groupby-variant", help=argparse.SUPPRESS)
    variant.add_argument("--logs", type=Path, required=True)
    variant.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    commands = {"ingest": bench_ingest, "ingest-grouping": bench_grouping, "label": bench_label, "infer": bench_infer,
                "quality": bench_quality, "compare": bench_compare, "vote": bench_vote, "_vote-impl": _vote_impl,
                "_raw-vllm": _raw_vllm, "_groupby-variant": _groupby_variant, "dataflow": bench_dataflow,
                "_dataflow-run": _dataflow_run, "nightly": bench_nightly, "_nightly-run": _nightly_run}  # fmt: skip
    commands[args.what](args)


if __name__ == "__main__":
    main()
