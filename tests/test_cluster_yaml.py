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
    assert cfg["docker"]["image"] == _kuberay_images() == "ghcr.io/your-org/conf-profile:gpu-2.60.0"


def _kuberay_images() -> str:
    """The one image every container of the KubeRay manifests runs."""
    images = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            images.update([node["image"]] if isinstance(node.get("image"), str) else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted((ROOT / "deploy" / "kuberay").glob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    assert len(images) == 1, images
    return images.pop()


def test_the_interpreter_ray_start_runs_is_the_one_the_project_is_installed_into() -> None:
    """Static: the image installs into its own Python (no virtual environment), the cluster adds none, and
    `ray start` is the image's; the image's base carries the Ray that pyproject.toml pins."""
    import re

    ray_pin = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(ray_pin)}-py311-gpu$", dockerfile, re.M)
    (install,) = [line for line in dockerfile.splitlines() if "scripts/setup.sh" in line]
    assert "VENV=system" in install and "PYTHON=python " in install and "CONF_PROFILE_TARGET=gpu" in install
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'if [ "$VENV" = system ]; then\n  PY="$(command -v "$PYTHON")"' in setup  # no venv in that mode
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    commands = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                              "initialization_commands") for c in cfg.get(key) or []]  # fmt: skip
    assert not [c for c in commands if "venv" in c.lower() or "pip install" in c]  # nothing beside the image
    starts = [c for key in ("head_start_ray_commands", "worker_start_ray_commands") for c in cfg[key]]
    assert all(c.split()[0] == "ray" for c in starts)  # the `ray` on the image's PATH, not another one


def test_the_validation_catches_a_broken_config() -> None:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    cfg["head_node_type"] = "no_such_type"
    with pytest.raises(ValueError):
        _validate(cfg)
