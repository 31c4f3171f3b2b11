"""Teacher labeling: documents/ -> teacher_samples/, K samples x M teachers per user on vLLM via Ray Data LLM.

    python -m jobs.label [--config FILE] [--set KEY=VALUE ...] [--run-dir DIR]

Reads <run-dir>/documents/ (written by jobs.ingest; without --run-dir, the latest run) and writes
<run-dir>/teacher_samples/<teacher>/ with one row per (user, teacher, sample): the raw text, the parsed
value / confidence / evidence per attribute, the rationale, the parse or engine error kind, token counts,
the prompt and taxonomy versions. Teachers, samples and engine settings are under `label.` (see
conf_profile/core/settings.py). A re-run skips the samples already labeled for the same document and
prompt version.
"""

from __future__ import annotations

from conf_profile.cli import job_parser, load_run_config, run_stage
from conf_profile.stages.label import READS, run_label


def main(argv: list[str] | None = None) -> None:
    args = job_parser("python -m jobs.label", __doc__).parse_args(argv)
    run_dir = run_stage("label", args, load_run_config(args), run_label, READS)
    print(f"teacher samples: {run_dir / 'teacher_samples'}")


if __name__ == "__main__":
    main()
