"""Where the run directory lives: a local folder (``pathlib.Path``) or a folder on an object store
(``ObjectPath``: ``s3://``, ``gs://``, any URI ``pyarrow.fs`` opens), behind the few operations the stages
use, so that one code path serves both.

On an object store there are no folders and no rename: an object appears whole when its upload completes,
and a "move" is a copy then a delete. So a single file is written next to its place and moved (the copy
appears whole, as a local rename does); a folder of files cannot be swapped in one step, and it is the
stage's manifest entry, written last, that commits it (conf_profile/storage.py). ``ObjectPath`` has no
``__fspath__``: a local-only call (``open``, ``os.replace``) on it fails at once instead of writing a local
folder named ``s3:``.

Credentials and endpoints come from the environment, as pyarrow reads them (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL``, ...); Ray workers started by the job inherit them.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_uri(where: str | os.PathLike[str]) -> bool:
    """A URI of a file system other than the local one (``s3://bucket/...``)."""
    text = str(where)
    return "://" in text and not text.startswith("file://")


def location(where: str | os.PathLike[str] | ObjectPath) -> Loc:
    """The run-directory location ``where`` names: an ObjectPath for a URI, else a local Path."""
    if isinstance(where, ObjectPath):
        return where
    text = str(where)
    if is_uri(text):
        return ObjectPath.from_uri(text)
    return Path(text.removeprefix("file://"))


class ObjectPath:
    """A path on a ``pyarrow.fs`` file system, with the part of ``pathlib.Path``'s interface the stages use;
    ``str()`` is its URI, which pyarrow and Ray Data read and write directly."""

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str) -> None:
        self.fs, self.path, self.scheme = fs, path.rstrip("/"), scheme

    @classmethod
    def from_uri(cls, uri: str) -> ObjectPath:
        fs, path = pafs.FileSystem.from_uri(uri)
        return cls(fs, path, uri.split("://", 1)[0])

    def __truediv__(self, other: str | os.PathLike[str]) -> ObjectPath:
        tail = str(other).strip("/")
        return ObjectPath(self.fs, f"{self.path}/{tail}" if tail else self.path, self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"ObjectPath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.scheme, self.path) == (other.scheme, other.path)

    def __hash__(self) -> int:
        return hash((self.scheme, self.path))

    def __lt__(self, other: ObjectPath) -> bool:  # sorted() of listings
        return self.path < other.path

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0] if "." in self.name.lstrip(".") else self.name

    @property
    def parent(self) -> ObjectPath:
        return ObjectPath(self.fs, self.path.rsplit("/", 1)[0] if "/" in self.path else self.path, self.scheme)

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def as_uri(self) -> str:
        return str(self)

    def resolve(self) -> ObjectPath:
        return self

    def relative_to(self, other: ObjectPath) -> Path:
        if not self.path.startswith(other.path + "/"):
            raise ValueError(f"{self} is not under {other}")
        return Path(self.path[len(other.path) + 1 :])

    def is_relative_to(self, other: ObjectPath | Path) -> bool:
        if not isinstance(other, ObjectPath):
            return False
        return self == other or self.path.startswith(other.path + "/")

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: a prefix exists once an object is under it."""

    def _listing(self, recursive: bool) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=recursive)
        return self.fs.get_file_info(selector)

    def iterdir(self) -> Iterator[ObjectPath]:
        for info in self._listing(recursive=False):
            yield ObjectPath(self.fs, info.path, self.scheme)

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """The entries whose path under this one matches ``pattern`` part by part (``bucket=*/*.parquet``)."""
        parts = pattern.split("/")
        for info in self._listing(recursive=len(parts) > 1):
            rel = info.path[len(self.path) + 1 :].split("/")
            if len(rel) == len(parts) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, parts, strict=True)):
                yield ObjectPath(self.fs, info.path, self.scheme)

    def rglob(self, pattern: str) -> Iterator[ObjectPath]:
        """The files at any depth under this one whose name matches ``pattern``."""
        for info in self._listing(recursive=True):
            if info.type == pafs.FileType.File and fnmatch.fnmatchcase(info.base_name, pattern):
                yield ObjectPath(self.fs, info.path, self.scheme)

    def stat(self) -> SimpleNamespace:
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=info.size, st_mtime=info.mtime.timestamp() if info.mtime else 0.0)

    def read_bytes(self) -> bytes:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not self.exists():
                raise FileNotFoundError(str(self)) from exc
            raise

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One upload: the object appears whole when it completes, or not at all."""
        with self.fs.open_output_stream(self.path) as f:
            f.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise


Loc = Path | ObjectPath


def remove(where: Loc) -> None:
    """Remove a file or a folder with everything in it; nothing if it is not there."""
    if isinstance(where, ObjectPath):
        kind = where._type()
        if kind == pafs.FileType.Directory:
            where.fs.delete_dir(where.path)
        elif kind == pafs.FileType.File:
            where.fs.delete_file(where.path)
        return
    if where.is_dir() and not where.is_symlink():
        shutil.rmtree(where, ignore_errors=True)
    else:
        where.unlink(missing_ok=True)


def move(source: Loc, target: Loc) -> None:
    """Put the file ``source`` in the place of ``target``: a rename on a local disk; on an object store a
    copy (the target appears whole) and a delete."""
    if isinstance(source, ObjectPath) and isinstance(target, ObjectPath):
        source.fs.move(source.path, target.path)
    elif isinstance(source, Path) and isinstance(target, Path):
        os.replace(source, target)
    else:
        raise ValueError(f"cannot move {source} to {target}: not on the same file system")


def move_tree(source: Loc, target: Loc) -> None:
    """Put the folder ``source`` in the place of ``target`` (removed first): one rename on a local disk; on
    an object store every file is moved, so the folder is half there meanwhile and the stage's manifest
    entry, written after it, is what commits it."""
    remove(target)
    if isinstance(source, Path) and isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        return
    assert isinstance(source, ObjectPath) and isinstance(target, ObjectPath), (source, target)
    for info in source._listing(recursive=True):
        if info.type == pafs.FileType.File:
            source.fs.move(info.path, f"{target.path}/{info.path[len(source.path) + 1 :]}")
    remove(source)


def arrow_args(where: Loc) -> dict[str, Any]:
    """``source``/``filesystem`` keyword arguments of pyarrow's readers and writers for ``where``."""
    if isinstance(where, ObjectPath):
        return {"filesystem": where.fs, "path": where.path}
    return {"filesystem": None, "path": str(where)}


def read_table(where: Loc, **kwargs: Any) -> pa.Table:
    """pq.read_table of a file or a folder, local or on an object store."""
    args = arrow_args(where)
    return pq.read_table(args["path"], filesystem=args["filesystem"], **kwargs)


def write_table(table: pa.Table, where: Loc, **kwargs: Any) -> None:
    """pq.write_table straight to ``where`` (no temp file: see storage.write_table_atomic for that)."""
    args = arrow_args(where)
    pq.write_table(table, args["path"], filesystem=args["filesystem"], **kwargs)


def parquet_file(where: Loc) -> pq.ParquetFile:
    """A Parquet file's reader (footer, row groups, batches), local or on an object store."""
    if isinstance(where, ObjectPath):
        return pq.ParquetFile(where.fs.open_input_file(where.path))
    return pq.ParquetFile(where)


def copy_file(local: Path, target: Loc) -> None:
    """Copy the local file ``local`` to ``target``."""
    if isinstance(target, Path):
        shutil.copyfile(local, target)
        return
    pafs.copy_files(str(local.resolve()), target.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=target.fs)  # fmt: skip


def upload_tree(local: Path, target: Loc) -> None:
    """Copy the local folder ``local`` to ``target`` (a local folder, or a prefix on an object store)."""
    if isinstance(target, Path):
        shutil.copytree(local, target, dirs_exist_ok=True)
        return
    pafs.copy_files(str(local.resolve()), target.path, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=target.fs)  # fmt: skip
