"""Finding and reading the raw logs: a file, a folder or a cloud URI, in Parquet, JSONL or CSV (with a
header row; every value is read as text, which the input mapping converts: core/mapping.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

PARQUET_EXTENSIONS = (".parquet", ".pq")
JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
CSV_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
EXTENSIONS = {"parquet": PARQUET_EXTENSIONS, "jsonl": JSONL_EXTENSIONS, "csv": CSV_EXTENSIONS}


class LogInputError(ValueError):
    """The logs cannot be read at all; the message says what was looked for and where."""


@dataclass(frozen=True)
class LogInput:
    filesystem: Any  # pyarrow.fs.FileSystem
    paths: tuple[str, ...]
    format: str  # "parquet" | "jsonl" | "csv"
    total_bytes: int
    unreadable: tuple[tuple[str, str], ...] = ()  # (path, error) of files that are not valid Parquet

    row_groups: tuple[tuple[int, ...], ...] = ()  # per Parquet file: compressed bytes of each row group
    sizes: tuple[int, ...] = ()  # per file: bytes, as listed (with mtimes_ns: how a night knows a file it read)
    mtimes_ns: tuple[int, ...] = ()  # per file: modification time, ns (0 where the filesystem has none)

    def only(self, keep: set[str]) -> LogInput:
        """The same input limited to the files in ``keep`` (readable and unreadable alike)."""
        picked = [i for i, p in enumerate(self.paths) if p in keep]
        return LogInput(
            self.filesystem,
            tuple(self.paths[i] for i in picked),
            self.format,
            sum(self.sizes[i] for i in picked),
            tuple(u for u in self.unreadable if u[0] in keep),
            tuple(self.row_groups[i] for i in picked) if self.row_groups else (),
            tuple(self.sizes[i] for i in picked),
            tuple(self.mtimes_ns[i] for i in picked),
        )

    def splits(self, split_mb: int) -> list[dict[str, Any]]:
        """Units of work for the readers: Parquet files cut into runs of row groups of about split_mb,
        JSONL and CSV files whole (they are streamed). A reader holds one batch at a time, so memory
        does not depend on file sizes."""
        if self.format != "parquet":
            return [{"path": p, "row_groups": None} for p in self.paths]
        out: list[dict[str, Any]] = []
        limit = split_mb * 2**20
        for path, sizes in zip(self.paths, self.row_groups, strict=True):
            current: list[int] = []
            size = 0
            for index, group_bytes in enumerate(sizes):
                if current and size + group_bytes > limit:
                    out.append({"path": path, "row_groups": current})
                    current, size = [], 0
                current.append(index)
                size += group_bytes
            out.append({"path": path, "row_groups": current})
        return out

    def read_split(self, split: dict[str, Any], batch_rows: int) -> Iterator[list[Any]]:
        """Rows of one split in batches: dicts for Parquet and CSV, text lines for JSONL. Undecodable bytes
        in a line become lone surrogates, so that the row is rejected as invalid_unicode, not the file."""
        if self.format == "parquet":
            with self.filesystem.open_input_file(split["path"]) as f:
                groups = split["row_groups"]
                for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, row_groups=groups):
                    yield batch.to_pylist()
            return
        if self.format == "csv":
            yield from _csv_batches(self.filesystem, split["path"], batch_rows)
            return
        with self.filesystem.open_input_stream(split["path"]) as stream:  # .gz is detected by extension
            lines: list[Any] = []
            for raw in io.BufferedReader(stream):  # type: ignore[arg-type]
                line = raw.decode("utf-8", "surrogateescape").strip()
                if line:
                    lines.append(line)
                if len(lines) >= batch_rows:
                    yield lines
                    lines = []
            if lines:
                yield lines


def resolve_input(logs: str, fmt: str = "auto") -> LogInput:
    """List the log files under ``logs`` (recursively; hidden and ``_``-prefixed files are skipped)."""
    try:
        filesystem, root = pafs.FileSystem.from_uri(logs) if "://" in logs else (pafs.LocalFileSystem(), logs)
        info = filesystem.get_file_info(str(Path(root).resolve()) if "://" not in logs else root)
    except (OSError, ValueError) as exc:
        raise LogInputError(f"--logs {logs!r}: cannot open ({exc})") from exc
    if info.type == pafs.FileType.NotFound:
        raise LogInputError(f"--logs {logs!r}: no such file or folder")
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = [
            i
            for i in filesystem.get_file_info(pafs.FileSelector(info.path, recursive=True))
            if i.type == pafs.FileType.File and not any(p.startswith((".", "_")) for p in Path(i.path).parts)
        ]
    fmt = _detect_format(logs, [i.path for i in infos], fmt)
    extensions = EXTENSIONS[fmt]
    chosen = sorted((i for i in infos if i.path.lower().endswith(extensions)), key=lambda i: i.path)
    if not chosen:
        raise LogInputError(f"--logs {logs!r}: no {fmt} files ({', '.join(extensions)}) found")
    groups, unreadable = _parquet_footers(filesystem, [i.path for i in chosen]) if fmt == "parquet" else ({}, [])
    readable = [i for i in chosen if i.path not in dict(unreadable)]
    if not readable:
        first_path, first_error = unreadable[0]
        raise LogInputError(f"--logs {logs!r}: no readable {fmt} file; e.g. {first_path}: {first_error}")
    return LogInput(
        filesystem,
        tuple(i.path for i in readable),
        fmt,
        sum(i.size or 0 for i in readable),
        tuple(unreadable),
        tuple(groups[i.path] for i in readable) if fmt == "parquet" else (),
        tuple(i.size or 0 for i in readable),
        tuple(i.mtime_ns or 0 for i in readable),
    )


def _parquet_footers(filesystem: Any, paths: list[str]) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, str]]]:
    """Row-group sizes of each file, and the files whose footer cannot be read (they go to rejects; the
    rest is read). Cheap: footers only."""
    groups: dict[str, tuple[int, ...]] = {}
    bad = []
    for path in paths:
        try:
            with filesystem.open_input_file(path) as f:
                meta = pq.ParquetFile(f).metadata
            groups[path] = tuple(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        except Exception as exc:  # any failure to read the footer means the file is unusable
            bad.append((path, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
    return groups, bad


def _detect_format(logs: str, paths: list[str], fmt: str) -> str:
    if fmt != "auto":
        return fmt
    found = [f for f, ext in EXTENSIONS.items() if any(p.lower().endswith(ext) for p in paths)]
    if len(found) > 1:
        raise LogInputError(f"--logs {logs!r}: {' and '.join(found)} files together; set ingest.format to choose one")
    if not found:
        raise LogInputError(f"--logs {logs!r}: no .parquet, .jsonl or .csv files found; set ingest.format if the "
                            "names have no extension")  # fmt: skip
    return found[0]


def _csv_batches(filesystem: Any, path: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """A CSV file's rows as dicts of text (an empty cell is None), streamed block by block."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    tab = path.lower().endswith((".tsv", ".tsv.gz"))
    parse = pacsv.ParseOptions(delimiter="\t" if tab else ",", newlines_in_values=True)
    with filesystem.open_input_stream(path) as stream:
        names = pacsv.open_csv(stream, parse_options=parse).schema.names  # the header
    convert = pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True)
    with filesystem.open_input_stream(path) as stream:
        reader = pacsv.open_csv(stream, parse_options=parse, convert_options=convert)
        rows: list[dict[str, Any]] = []
        for batch in reader:
            rows.extend(batch.to_pylist())
            while len(rows) >= batch_rows:
                yield rows[:batch_rows]
                rows = rows[batch_rows:]
        if rows:
            yield rows
