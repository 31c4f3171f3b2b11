"""The configuration reference is generated from the config classes and kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conf_profile.core.config import to_dict
from conf_profile.core.config_docs import config_reference, field_comments
from conf_profile.core.mapping import EventType
from conf_profile.core.settings import Config

ROOT = Path(__file__).resolve().parents[1]
# settings whose value is a mapping
MAPPING_KEYS = ("source_budgets", "resources", "teachers[].engine", "nightly.catalog")


def _keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and not any(name.endswith(m) for m in MAPPING_KEYS):
            out += _keys(v, name)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out += _keys(v[0], f"{name}[]")
        else:
            out.append(name)
    return out


def test_every_config_key_is_documented_with_its_default_and_a_meaning() -> None:
    text = config_reference()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    config = to_dict(Config())
    # a section keyed by the user's names (ingest.mapping.types.<name>): one example entry stands for it
    config["ingest"]["mapping"]["types"] = {"<name>": to_dict(EventType())}
    keys = _keys(config)
    assert set(keys) == set(rows)
    for key in keys:
        meaning = rows[key].split("|")[4].strip()
        assert meaning, f"{key} has no comment in settings.py"
    assert "| `train_rl.num_generations` | int | `2` |" in text  # subclass field, own default
    assert "| `train_rl.zero_stage` | int | `2` |" in text  # inherited field


def test_comments_above_a_field_are_joined_with_its_line_comment() -> None:
    comments = field_comments()
    assert comments["LabelConfig"]["max_users"].startswith("Label only the first N users by user_id")


def test_the_checked_in_reference_is_current() -> None:
    res = subprocess.run([sys.executable, "-m", "jobs.config_reference", "--check"], cwd=ROOT, capture_output=True,
                         text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
