"""Ingest: raw user logs -> one bounded user document per user, and every unusable row in rejects.

    python -m jobs.ingest --logs PATH [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

PATH is a file, a folder or a cloud URI (s3://..., gs://...) of Parquet or JSONL logs with the columns
event_id, user_id, event_time, event_type, payload (see conf_profile/synthetic/generator.py). Writes
<run-dir>/documents/ (user_id, document, per-source event counts, chars, est_tokens, first/last event
time, content_hash), <run-dir>/rejects/ (reason, user_id, event_id, raw) and a manifest entry with counts.
Options are under `ingest.` (budgets, limits, buckets; see conf_profile/core/settings.py).
"""

from __future__ import annotations

import json

from conf_profile.cli import INTERRUPTED, fail, interrupted, job_parser, load_config
from conf_profile.core.config import to_dict
from conf_profile.log_input import LogInputError
from conf_profile.stages.ingest import run_ingest
from conf_profile.storage import open_run_dir, record_stage


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.ingest", __doc__)
    parser.add_argument("--logs", required=True, help="Parquet or JSONL logs: a file, a folder or a URI")
    args = parser.parse_args(argv)
    cfg = load_config(args)
    run_dir = open_run_dir(args.run_dir, cfg.run.runs_root)
    try:
        entry = run_ingest(cfg.ingest, args.logs, run_dir, cfg.ray)
    except LogInputError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(interrupted(run_dir, resumes=False), INTERRUPTED)  # the ingest has no partial resume
    record_stage(run_dir, "ingest", {**entry, "status": "ok"}, to_dict(cfg))
    print(json.dumps(entry, indent=2))
    print(f"documents: {run_dir / 'documents'}\nrejects:   {run_dir / 'rejects'}")


if __name__ == "__main__":
    main()
