"""Stage: the pipeline's input. The configured logs, or (by default) the built-in synthetic logs with truth,
generated under ``<run_dir>/input``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from conf_profile import fs
from conf_profile.core.settings import Config
from conf_profile.fs import Loc, ObjectPath
from conf_profile.storage import INPUT, RunTable, write_text_atomic
from conf_profile.synthetic.dataset import write_dataset
from conf_profile.synthetic.hostile import hostile_events

READS: tuple[RunTable, ...] = ()
WRITES = (INPUT,)


def logs_path(cfg: Config, run_dir: Loc) -> str:
    return cfg.input.logs or str(run_dir / "input" / "logs")


def run(cfg: Config, run_dir: Loc) -> dict[str, Any]:
    if cfg.input.logs:
        return {"logs": cfg.input.logs, "builtin": False}
    out = run_dir / "input"
    d = cfg.data
    if (out / "dataset.json").exists():  # written last: the folder is complete (resume)
        summary = json.loads((out / "dataset.json").read_text())
        wanted = (d.users, d.seed, d.bad_fraction, d.files, d.hostile_fraction)
        if tuple(summary.get(k, 0.0) for k in ("users", "seed", "bad_fraction", "files", "hostile_fraction")) == wanted:
            return {"logs": logs_path(cfg, run_dir), "builtin": True, **summary, "reused": True}
    if isinstance(out, ObjectPath):  # generated in a local folder, uploaded, dataset.json last
        with tempfile.TemporaryDirectory(prefix="builtin-data-") as tmp:
            local = Path(tmp) / "input"
            summary = _generate(cfg, local)
            (local / "dataset.json").unlink()
            fs.remove(out)
            fs.upload_tree(local, out)
            write_text_atomic(out / "dataset.json", json.dumps(summary, indent=2) + "\n")
    else:
        summary = _generate(cfg, out)
    return {"logs": logs_path(cfg, run_dir), "builtin": True, **summary}


def _generate(cfg: Config, out: Path) -> dict[str, Any]:
    d = cfg.data
    summary = write_dataset(out, d.users, seed=d.seed, bad_fraction=d.bad_fraction, files=d.files, overwrite=True)
    if d.hostile_fraction > 0:
        summary = _add_hostile(out, d.hostile_fraction, d.seed, summary)
    return summary


def _add_hostile(out: Path, fraction: float, seed: int, summary: dict[str, Any]) -> dict[str, Any]:
    """Append the injection events as one more log file and record them in hostile.parquet."""
    truth = pq.read_table(out / "truth.parquet").to_pylist()
    events, targets = hostile_events(truth, fraction, seed, when="2026-03-01T12:00:00Z")
    logs = pq.read_table(next((out / "logs").glob("*.parquet")))
    pq.write_table(pa.Table.from_pylist(events, schema=logs.schema), out / "logs" / "part-hostile.parquet")
    pq.write_table(pa.Table.from_pylist(targets), out / "hostile.parquet")
    summary = {**summary, "hostile_fraction": fraction, "hostile_users": len(targets)}
    write_text_atomic(out / "dataset.json", json.dumps(summary, indent=2) + "\n")  # last: the folder is complete
    return summary
