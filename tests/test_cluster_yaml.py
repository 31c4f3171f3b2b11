"""cluster.yaml passes the Ray cluster launcher's own validation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_a_valid_ray_cluster_config() -> None:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    prepared = _validate(cfg)
    assert prepared["provider"]["type"] == "aws"
    assert {"head", "gpu_teacher", "gpu_train"} <= set(prepared["available_node_types"])
    assert cfg["docker"]["image"].startswith("rayproject/ray:2.60.0")


def test_the_validation_catches_a_broken_config() -> None:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        _validate(cfg)
