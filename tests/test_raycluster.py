"""The local Ray a job starts (conf_profile/raycluster.py): its processes reach the state API of that Ray,
whatever the machine's last `ray start` left behind, and the driver's own environment is left as it was;
Ray Train polls its workers more often than on a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, os, ray
from conf_profile.core.settings import RayConfig
from conf_profile.raycluster import init_ray

init_ray(RayConfig(local_num_cpus=1), dashboard=True)
url = ray._private.worker.global_worker.node.address_info["webui_url"]

@ray.remote(num_cpus=0)
def from_a_worker():
    from ray.util.state import list_nodes
    env = os.environ
    return env.get("RAY_API_SERVER_ADDRESS"), env.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"), [
        n.state for n in list_nodes(timeout=10)]

seen, poll, nodes = ray.get(from_a_worker.remote(), timeout=60)
ray.shutdown()
init_ray(RayConfig(local_num_cpus=1))  # a job that does not train: no dashboard
plain = ray._private.worker.global_worker.node.address_info["webui_url"]
print(json.dumps({"driver": os.environ.get("RAY_API_SERVER_ADDRESS"), "worker": seen, "nodes": nodes,
                  "dashboard": url, "poll": poll, "plain": plain}))
"""


@pytest.mark.ray
def test_the_workers_of_a_local_ray_reach_its_state_api_and_the_driver_keeps_its_environment() -> None:
    """Ray Train's placement-group cleaner, a worker of the job's Ray, queries the state API every second;
    pointed at a dead head, each training stage ended 12 s late."""
    res = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["worker"] == f"http://{out['dashboard']}" and out["dashboard"].startswith("127.0.0.1:")
    assert out["nodes"] == ["ALIVE"]  # the state API answered from the worker, about this one-node Ray
    assert out["driver"] is None  # not left in the driver: it would redirect its job and state clients
    assert out["poll"] == "0.5"  # Ray Train's controller polls its workers every 0.5 s on a one-machine Ray
    assert not out["plain"]  # a local Ray for a job that does not train starts without a dashboard


def test_free_ports_lie_between_rays_worker_ports_and_the_ephemeral_range_and_are_free(tmp_path, monkeypatch) -> None:
    """The ports the kernel hands out (Ray's own, in the same start) come from the ephemeral range, Ray's
    workers listen on 10002-19999: a port chosen for a Ray process to bind later is in neither, and free."""
    import socket

    from conf_profile import raycluster

    span = tmp_path / "range"
    span.write_text("32768\t60999\n")
    monkeypatch.setattr(raycluster, "EPHEMERAL_RANGE", span)
    ports = [raycluster.free_port() for _ in range(20)]
    assert all(20000 <= p < 32768 for p in ports) and len(set(ports)) > 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # free: binding it works

    # a taken candidate is passed over
    with socket.socket() as taken, socket.socket() as other:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        other.bind(("127.0.0.1", 0))
        busy, free = taken.getsockname()[1], other.getsockname()[1]
        other.close()
        monkeypatch.setattr(raycluster.random, "sample", lambda population, k: [busy, free])
        assert raycluster.free_port() == free

    # no room below the ephemeral range (or no such file): a port from the kernel, free as well
    monkeypatch.undo()
    span.write_text("1024 60999")
    monkeypatch.setattr(raycluster, "EPHEMERAL_RANGE", span)
    assert 1024 <= raycluster.free_port() <= 65535
    monkeypatch.setattr(raycluster, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert 20000 <= raycluster.free_port() < 32768
