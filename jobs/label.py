"""Teacher labeling: documents/ -> teacher_samples/, K samples x M teachers per user on vLLM via Ray Data LLM.

    python -m jobs.label [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

Reads <run-dir>/documents/ (written by jobs.ingest) and writes <run-dir>/teacher_samples/<teacher>/ with
one row per (user, teacher, sample): the raw text, the parsed value / confidence / evidence per attribute,
the rationale, the parse or engine error kind, token counts, the prompt and taxonomy versions. Teachers,
samples and engine settings are under `label.` (see conf_profile/core/settings.py). A re-run skips the
samples already labeled for the same document and prompt version.
"""

from __future__ import annotations

import json

from conf_profile.cli import fail, job_parser, load_config
from conf_profile.core.config import to_dict
from conf_profile.label import run_label
from conf_profile.runs import open_run_dir, record_stage


def main(argv: list[str] | None = None) -> None:
    args = job_parser("python -m jobs.label", __doc__).parse_args(argv)
    cfg = load_config(args)
    run_dir = open_run_dir(args.run_dir, cfg.run.runs_root)
    try:
        entry = run_label(cfg, run_dir)
    except FileNotFoundError as exc:
        fail(str(exc))
    record_stage(run_dir, "label", {**entry, "status": "ok"}, to_dict(cfg))
    print(json.dumps(entry, indent=2))
    print(f"teacher samples: {run_dir / 'teacher_samples'}")


if __name__ == "__main__":
    main()
