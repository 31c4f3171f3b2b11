"""The deployment files: the runtime environment, the KubeRay manifests (checked against the KubeRay API's
field names, Ray's own runtime-env validation and this project's job parsers) and their pins."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from jobs.nightly import build_parser

ROOT = Path(__file__).resolve().parents[1]
RAY_VERSION = re.search(r'"ray\[[^\]]*\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)


def _closed(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


_ANY = {}
_POD_TEMPLATE = {"type": "object", "required": ["spec"], "properties": {"spec": {
    "type": "object", "required": ["containers"], "properties": {"containers": {"type": "array", "minItems": 1,
        "items": {"type": "object", "required": ["name", "image"]}}}}}}  # fmt: skip
_HEAD = _closed({"rayStartParams": {"type": "object"}, "template": _POD_TEMPLATE, "serviceType": _ANY,
                 "headService": _ANY, "enableIngress": _ANY}, ("template",))  # fmt: skip
_WORKER = _closed({"groupName": {"type": "string"}, "replicas": {"type": "integer"}, "minReplicas": {"type": "integer"},
                   "maxReplicas": {"type": "integer"}, "rayStartParams": {"type": "object"}, "template": _POD_TEMPLATE,
                   "scaleStrategy": _ANY, "numOfHosts": _ANY, "idleTimeoutSeconds": _ANY, "suspend": _ANY},
                  ("groupName", "template"))  # fmt: skip
_CLUSTER = _closed({"rayVersion": {"type": "string"}, "headGroupSpec": _HEAD, "workerGroupSpecs": {"type": "array",
                    "items": _WORKER}, "enableInTreeAutoscaling": _ANY, "autoscalerOptions": _ANY, "suspend": _ANY,
                    "gcsFaultToleranceOptions": _ANY, "headServiceAnnotations": _ANY, "managedBy": _ANY,
                    "authOptions": _ANY}, ("headGroupSpec",))  # fmt: skip
# RayJobSpec field names (KubeRay ray.io/v1 API reference): a misspelt field fails here, not in the cluster.
RAYJOB_SPEC = _closed({
    "entrypoint": {"type": "string"}, "runtimeEnvYAML": {"type": "string"}, "rayClusterSpec": _CLUSTER,
    "shutdownAfterJobFinishes": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
    "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "backoffLimit": {"type": "integer", "minimum": 0},
    "clusterSelector": _ANY, "deletionStrategy": _ANY, "entrypointNumCpus": _ANY, "entrypointNumGpus": _ANY,
    "entrypointResources": _ANY, "jobId": _ANY, "managedBy": _ANY, "metadata": _ANY, "submissionMode": _ANY,
    "submitterConfig": _ANY, "submitterPodTemplate": _ANY, "suspend": _ANY,
}, ("entrypoint",))  # fmt: skip
_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"


def _load(name: str) -> dict:
    return yaml.safe_load((ROOT / "deploy" / "kuberay" / name).read_text())


def _check_runtime_env(env: dict) -> None:
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray's own validation of every field
    assert all(isinstance(v, str) for v in env.get("env_vars", {}).values())


def test_the_runtime_env_is_valid_for_ray_and_keeps_the_upload_small() -> None:
    env = yaml.safe_load((ROOT / "jobs" / "runtime_env.yaml").read_text())
    _check_runtime_env(env)
    assert {".venv/", "runs/", ".git/"} <= set(env["excludes"])
    assert env["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"


def test_the_rayjob_matches_the_kuberay_api_the_pins_and_the_nightly_job() -> None:
    job = _load("rayjob-nightly.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    jsonschema.validate(job["spec"], RAYJOB_SPEC)
    spec = job["spec"]
    _check_runtime_env(yaml.safe_load(spec["runtimeEnvYAML"]))
    assert spec["rayClusterSpec"]["rayVersion"] == RAY_VERSION
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.nightly"]
    args = build_parser().parse_args(argv[3:])  # the entrypoint is a valid jobs.nightly command line
    assert args.date == "today" and args.out
    pods = [spec["rayClusterSpec"]["headGroupSpec"]["template"]] + [
        g["template"] for g in spec["rayClusterSpec"]["workerGroupSpecs"]]  # fmt: skip
    for pod in pods:
        volumes = {v["name"] for v in pod["spec"].get("volumes", [])}
        for c in pod["spec"]["containers"]:
            assert RAY_VERSION in c["image"], c["image"]
            assert {m["name"] for m in c.get("volumeMounts", [])} <= volumes  # every mount has its volume
            assert c["resources"]["limits"] == c["resources"]["requests"]  # guaranteed QoS for long jobs
    gpu = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert int(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]


def test_the_raycronjob_runs_the_same_rayjob_on_a_valid_schedule() -> None:
    cron = _load("raycronjob-nightly.yaml")
    assert (cron["apiVersion"], cron["kind"]) == ("ray.io/v1", "RayCronJob")
    assert cron["spec"]["jobTemplate"] == _load("rayjob-nightly.yaml")["spec"]
    fields = cron["spec"]["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(_CRON_FIELD, f) for f in fields)
    allowed = {"schedule", "timeZone", "suspend", "jobTemplate", "concurrencyPolicy", "startingDeadlineSeconds",
               "successfulJobsHistoryLimit", "failedJobsHistoryLimit"}  # fmt: skip
    assert set(cron["spec"]) <= allowed


def test_the_schema_catches_a_misspelt_field() -> None:
    spec = dict(_load("rayjob-nightly.yaml")["spec"], shutdownAfterJobFinish=True)
    with pytest.raises(jsonschema.ValidationError, match="shutdownAfterJobFinish"):
        jsonschema.validate(spec, RAYJOB_SPEC)


def test_the_pinned_versions_agree() -> None:
    train = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]
    assert f"ray[default,data,train]=={RAY_VERSION}" in train  # default: the job server that ray job submit needs
    image = yaml.safe_load((ROOT / "cluster.yaml").read_text())["docker"]["image"]
    assert image.endswith(f":gpu-{RAY_VERSION}")  # the project's image (Dockerfile), tagged with its Ray
    assert f"FROM rayproject/ray:{RAY_VERSION}-py311-gpu" in (ROOT / "Dockerfile").read_text()
