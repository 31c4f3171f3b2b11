"""The arguments every job shares: ``--config FILE``, ``--set KEY=VALUE`` (repeatable), ``--run-dir DIR``.

Configuration errors are reported as one line naming the key and the fix, with exit status 2, before any
work starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from conf_profile.core.config import ConfigError, build, changed_keys, load_yaml, merge, to_dict
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import TaxonomyError, load_taxonomy
from conf_profile.fs import location


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
        type=location,  # a folder, or a URI on an object store (s3://bucket/runs/<run_id>)
        help="run directory, a folder or an object-store URI (default: a new <run.runs_root>/<run_id>/, with "
        "<run.runs_root>/latest pointing at it)",
    )
    return parser


def load_config(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> Config:
    """Build the config from defaults < --config < --set < job-specific flags; exit 2 with a clear message
    on any error, including a taxonomy that does not load."""
    try:
        data = load_yaml(args.config) if args.config else {}
        cfg = build(Config, data, [*args.overrides, *extra_overrides])
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    return load_config_checks(cfg)


def load_config_checks(cfg: Config) -> Config:
    """What a config needs beyond its own validation: a taxonomy that loads, the pseudonymization key."""
    try:
        load_taxonomy(cfg.taxonomy.path)
    except TaxonomyError as exc:
        fail(f"configuration error: {exc}")
    if cfg.privacy.pseudonymize_ids and not os.environ.get(cfg.privacy.key_env):
        fail(f"configuration error: privacy.pseudonymize_ids needs the key in the environment variable "
             f"{cfg.privacy.key_env} (set it, or privacy.key_env to the variable that holds it)")  # fmt: skip
    return cfg


def load_run_config(args: argparse.Namespace, extra_overrides: Sequence[str] = ()) -> Config:
    """For the jobs that continue a run: the run's own settings (its manifest's config) < --config < --set <
    job flags, so that a run made with other settings (``--set taxonomy.path=...``) needs no flag repeated.
    Says on stderr which keys the flags change against the run's settings. Without a run directory or a
    manifest: load_config (the job then reports the missing run)."""
    cfg = load_config(args, extra_overrides)
    from conf_profile.storage import MANIFEST, existing_run_dir

    try:
        manifest = existing_run_dir(args.run_dir, cfg.run.runs_root) / MANIFEST
    except FileNotFoundError:
        return cfg
    saved = json.loads(manifest.read_text(encoding="utf-8")).get("config") if manifest.exists() else None
    if not saved:
        return cfg
    try:
        data = load_yaml(args.config) if args.config else {}
        run_cfg = build(Config, merge(saved, data), [*args.overrides, *extra_overrides])
    except ConfigError as exc:
        fail(f"configuration error: the run's settings ({manifest}) with the flags given: {exc}")
    changed = changed_keys(saved, to_dict(run_cfg))
    note = f"; the flags change {', '.join(changed)}" if changed else ""
    print(f"{Path(sys.argv[0]).stem or 'conf-profile'}: the run's settings from {manifest}{note}", file=sys.stderr)
    return load_config_checks(run_cfg)


INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


def fail(message: str, status: int = 2) -> NoReturn:
    print(f"{Path(sys.argv[0]).stem or 'conf-profile'}: {message}", file=sys.stderr)
    raise SystemExit(status)


def run_stage(
    stage: str, args: argparse.Namespace, cfg: Config, run: Callable[[Config, Path], dict[str, Any]],
    reads: Sequence[Any] = (),
) -> Path:  # fmt: skip
    """The body of a job that continues a run (--run-dir, or the latest run): check that the run tables in
    ``reads`` are there, run the stage, record it in the manifest, print its entry. Missing inputs and
    invalid data end with one clear line and status 2, Ctrl-C with one line and status 130."""
    from conf_profile.storage import check_reads, existing_run_dir, record_stage

    run_dir = None
    try:
        run_dir = existing_run_dir(args.run_dir, cfg.run.runs_root)
        check_reads(stage, reads, run_dir)
        entry = run(cfg, run_dir)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(interrupted(run_dir), INTERRUPTED)
    record_stage(run_dir, stage, {**entry, "status": "ok"}, to_dict(cfg))
    print(json.dumps(entry, indent=2))
    return run_dir


def interrupted(run_dir: Any, resumes: bool = True) -> str:
    """What a job ended by Ctrl-C says after its name (fail() prefixes it): where its finished work is, and
    how to go on from it; a job that keeps nothing of a part done (``resumes=False``: the ingest) says that
    the same command does it again.

    >>> line = interrupted("runs/r1")
    >>> line.startswith("interrupted (Ctrl-C); what it finished"), line.endswith("--run-dir runs/r1 goes on from there")
    (True, True)
    >>> interrupted("runs/r1", resumes=False)
    'interrupted (Ctrl-C) before it was done: the same command with --run-dir runs/r1 does it again'
    >>> interrupted(None)
    'interrupted (Ctrl-C) before it began'
    """
    if run_dir is None:
        return "interrupted (Ctrl-C) before it began"
    if not resumes:
        return f"interrupted (Ctrl-C) before it was done: the same command with --run-dir {run_dir} does it again"
    return (f"interrupted (Ctrl-C); what it finished is kept in {run_dir}: the same command with --run-dir "
            f"{run_dir} goes on from there")  # fmt: skip
