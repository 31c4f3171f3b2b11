"""The nightly refresh: re-profile the users with new activity, publish only when the quality gates pass.

    python -m jobs.nightly --logs PATH --date YYYY-MM-DD --model DIR [--calibration FILE] [--out DIR]
                           [--config FILE] [--set KEY=VALUE ...]

Reads the input files that arrived since the last published night (the store's input_files table: path,
size and modification time of every file read) and rebuilds their users' documents from the events the
store keeps (events) plus the new ones; the first night, a new model, other document-shaping ingest
settings, or nightly.incremental=false read every file. Selects the users whose document changed since the
last published night (its content hash; late events included) and the users new to the store (on a full
read, also every user whose profile another model made), profiles them with the student model (as
jobs.infer, infer.* settings) and checks the quality gates:
parse-failure rate, abstain rate, and label drift against the previous partition (nightly.* thresholds).
Only when every gate passes does it publish, under --out (nightly.root, default ./nightly), in the
format nightly.table_format: by default Iceberg tables (a SQL catalog in <out>/catalog.db, or
nightly.catalog), one commit per table:
  profiles, profile_attributes, rejects   partitioned by dt: the night's users (a re-run replaces them)
  events, input_files                     partitioned by dt: the valid events and the files read that night
  profiles_latest                         the latest row of every user (upserted)
  state                                   what each published profile was made from (content hash,
                                          model): the next night compares with it
  nights                                  one row per published night, its watermark (committed last)
or, with nightly.table_format=parquet, the folders profiles/dt=DATE/, profile_attributes/dt=DATE/,
rejects/dt=DATE/, events/dt=DATE/, input_files/dt=DATE/, profiles_latest/, state/dt=DATE/, nights/ and
watermark.json. A night killed mid-publish publishes nothing: the next night sets the Iceberg tables back
to the last published night first. python -m jobs.tables shows the
Iceberg tables' history, reads them as of a night and rolls bad nights back.
A failed gate exits with status 3 and commits nothing; work/dt=DATE/gates.json says why.
--calibration defaults to the calibrator of the run that trained the model (<run>/models/<name>): its
calibration_student.json when jobs.infer --gold refitted it for this model, else its calibration.json.
Two nights never publish to one store at once: a night holds the store's lease (<out>/.lease) from start to
end, and a second one started meanwhile exits with status 4 and writes nothing.
Exit status: 0 published, 2 bad input or configuration, 3 a quality gate failed, 4 another night holds the
store.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from conf_profile.cli import INTERRUPTED, fail, job_parser, load_config


def resolve_date(value: str) -> str:
    """'today' and 'yesterday' (UTC) as YYYY-MM-DD; anything else as given."""
    today = datetime.now(UTC).date()
    return {"today": today, "yesterday": today - timedelta(days=1)}.get(value, value).__str__()


def build_parser() -> argparse.ArgumentParser:
    parser = job_parser("python -m jobs.nightly", __doc__)
    parser.add_argument("--logs", required=True, metavar="PATH", help="Parquet/JSONL logs (file, folder or URI)")
    parser.add_argument("--date", required=True, metavar="YYYY-MM-DD",
                        help="the night's partition date, or today / yesterday (UTC), for schedulers")  # fmt: skip
    parser.add_argument("--model", required=True, metavar="DIR", help="the student model folder")
    parser.add_argument("--calibration", metavar="FILE", help="calibration.json (default: the model's run's)")
    parser.add_argument("--out", metavar="DIR", help="the table store (nightly.root, default ./nightly)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.date = resolve_date(args.date)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        fail(f"--date {args.date}: use YYYY-MM-DD")
    if args.run_dir is not None:
        fail("--run-dir is not used by the nightly job: its tables go under --out")
    cfg = load_config(args, [f"nightly.root={args.out}"] if args.out else [])
    from conf_profile.stages.nightly import GateFailure, run_nightly  # after the checks
    from conf_profile.storage import LeaseHeld

    try:
        entry = run_nightly(cfg, args.logs, args.date, args.model, args.calibration)
    except GateFailure as exc:
        fail(str(exc), status=3)
    except LeaseHeld as exc:
        fail(str(exc), status=4)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:  # the lease is released on the way out
        fail(f"interrupted (Ctrl-C); the tables are as the last published night left them: the same command "
             f"runs {args.date} again", INTERRUPTED)  # fmt: skip
    print(json.dumps(entry, indent=2, default=str))
    print(f"published {entry['users_active']:,} users for {args.date}; profiles_latest has {entry['latest_users']:,} "
          f"users; watermark {entry['watermark']}")  # fmt: skip


if __name__ == "__main__":
    main()
