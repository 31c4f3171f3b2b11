"""The arguments every job shares: ``--config FILE``, ``--set KEY=VALUE`` (repeatable), ``--run-dir DIR``.

Configuration errors are reported as one line naming the key and the fix, with exit status 2, before any
work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from conf_profile.core.config import ConfigError, build, load_yaml
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import TaxonomyError, load_taxonomy


def job_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = parser.add_argument_group("common options (every job)")
    common.add_argument(
        "--config", metavar="FILE", help="YAML config file (sections as in conf_profile/core/settings.py)"
    )
    common.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set data.users=500 (repeatable; wins over --config)",
    )
    common.add_argument(
        "--run-dir",
        metavar="DIR",
        type=Path,
        help="run directory (default: a new runs/<run_id>/, with runs/latest pointing at it)",
    )
    return parser


def load_config(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> Config:
    """Build the config from defaults < --config < --set < job-specific flags; exit 2 with a clear message
    on any error, including a taxonomy that does not load."""
    try:
        data = load_yaml(args.config) if args.config else {}
        cfg = build(Config, data, [*args.overrides, *extra_overrides])
        load_taxonomy(cfg.taxonomy.path)
    except (ConfigError, TaxonomyError) as exc:
        fail(f"configuration error: {exc}")
    return cfg


def fail(message: str, status: int = 2) -> NoReturn:
    print(f"{Path(sys.argv[0]).stem or 'conf-profile'}: {message}", file=sys.stderr)
    raise SystemExit(status)
