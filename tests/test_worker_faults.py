"""Worker faults on a simulated multi-node cluster (Ray's cluster utilities, all on 127.0.0.1).

The head node (1 CPU) runs the driver; a worker node (2 CPUs) declares the custom resource ``engine_node``,
which ``label.engine.resources`` / ``infer.engine.resources`` ask for, so the vLLM engine always runs
there. In the middle of labeling, and again in the middle of inference, that node is killed hard
(``allow_graceful=False``: its raylet and every process on it die, as when a cloud VM is reclaimed) and a
fresh node joins. The engines take one batch at a time, so most of the work is still to do when the node
dies. Each job must complete with the same set of users, no duplicates and no gaps.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import free_port

from conf_profile.core.config import build
from conf_profile.core.settings import Config, IngestConfig

NODE = {"num_cpus": 2, "resources": {"engine_node": 1}}
ENGINE_ACTOR = "vLLMEngineStageUDF"
LABELED = 12  # users the teacher labels (x 2 samples); inference profiles all 24


class NodeLoss:
    """Runs ``job`` in a thread; once ``ready()`` holds, kills the engine's node and adds a fresh one. The
    kill and the new node happen on the main thread (Ray's node start-up installs signal handlers)."""

    def __init__(self, cluster, node) -> None:
        self.cluster, self.node = cluster, node

    def run(self, job: Callable[[], dict], ready: Callable[[], bool]) -> tuple[dict, bool]:
        """(the job's result, whether the node was killed while the job was still running)."""
        box: dict = {}

        def target() -> None:
            try:
                box["result"] = job()
            except BaseException as exc:  # re-raised on the main thread
                box["error"] = exc

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        deadline = time.monotonic() + 600
        while thread.is_alive() and time.monotonic() < deadline and not ready():
            time.sleep(0.25)
        killed_mid_run = thread.is_alive()
        if killed_mid_run:
            self.cluster.remove_node(self.node, allow_graceful=False)
            self.node = self.cluster.add_node(**NODE)
        thread.join(timeout=900)
        assert not thread.is_alive(), "the job did not finish within 15 minutes of losing its node"
        if "error" in box:
            raise box["error"]
        return box["result"], killed_mid_run


def _kill_orphaned_engines(since: float) -> list[int]:
    """Kills the vLLM engine processes that a killed node left behind: the engine core is a child process of
    the engine actor, and a SIGKILL to the actor's node leaves it running under init (ppid 1), holding its
    model and KV cache for the rest of the test session. Only those started since ``since``; their pids."""
    orphans = []
    for proc in psutil.process_iter(["name", "ppid", "create_time"]):
        info = proc.info
        if info["ppid"] == 1 and (info["name"] or "").startswith("VLLM::") and info["create_time"] >= since:
            with contextlib.suppress(psutil.NoSuchProcess):  # it (or a worker of it) ended meanwhile
                for process in [*proc.children(recursive=True), proc]:  # its workers too
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.kill()
            orphans.append(proc.pid)
    return orphans


def _engine_actors() -> list:
    """The vLLM engine actors of the cluster, dead ones included (a restarted actor shows its latest node)."""
    from ray.util.state import list_actors

    actors = list_actors(limit=1000, detail=True, raise_on_missing_output=False)
    return [a for a in actors if ENGINE_ACTOR in (a.class_name or "")]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
@pytest.mark.fault
def test_labeling_and_inference_survive_losing_the_engine_node(tmp_path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from conf_profile.bench.ingest_local import run_ingest_local
    from conf_profile.models import tiny_model_dir
    from conf_profile.stages.infer import run_infer
    from conf_profile.stages.label import run_label
    from conf_profile.synthetic.dataset import write_dataset

    write_dataset(tmp_path / "in", users=24, seed=7, files=1)
    run_dir = tmp_path / "run"
    run_ingest_local(IngestConfig(), str(tmp_path / "in" / "logs"), run_dir)
    users = set(pq.read_table(run_dir / "documents", columns=["user_id"]).column("user_id").to_pylist())
    labeled = set(sorted(users)[:LABELED])  # label.max_users: the first users by user_id
    cache = tmp_path / "cache"
    model = str(tiny_model_dir(cache))
    pin = "{engine_node: 1}"
    # One batch in flight per engine: the engine works through the batches one by one, so when the node dies
    # most of the work is still to do (with several batches in flight, all of them could finish before the
    # kill on a fast machine, and no engine would be needed on the new node). Outputs cut at 128 tokens (the
    # random model's JSON needs ~400): what is checked here are the keys of the rows, each written with its
    # parse error, and the shorter outputs halve the decoding.
    cfg = build(Config, overrides=[
        f"models.cache_dir={cache}", f"label.max_users={LABELED}", "label.engine.batch_size=2",
        "label.engine.max_concurrent_batches=1", f"label.engine.resources={pin}",
        "label.teachers=[{name: t, model: tiny, samples: 2, max_tokens: 128}]",
        "infer.engine.batch_size=1", "infer.engine.max_concurrent_batches=1", "infer.max_tokens=128",
        f"infer.engine.resources={pin}"])  # fmt: skip
    # The head on free ports: another Ray on this machine (a CI co-tenant) may hold the defaults (6379, 8265, 52365).
    head = {"num_cpus": 1, "include_dashboard": True, "gcs_server_port": free_port(), "dashboard_port": free_port()}
    head["dashboard_agent_listen_port"] = free_port()
    started = time.time()  # psutil's create_time clock
    cluster = Cluster(initialize_head=True, head_node_args=head)
    node = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    try:
        # Labeling: the node dies after the first samples are written, with the rest still to do.
        out = run_dir / "teacher_samples"
        loss = NodeLoss(cluster, node)
        entry, killed = loss.run(lambda: run_label(cfg, run_dir), lambda: any(out.rglob("*.parquet")))
        assert killed, "the node was not killed mid-labeling"
        samples = pq.read_table(out, columns=["user_id", "sample", "error"])
        keys = list(zip(samples.column("user_id").to_pylist(), samples.column("sample").to_pylist(), strict=True))
        assert len(keys) == len(set(keys)), "duplicate samples"
        assert set(keys) == {(u, k) for u in labeled for k in range(2)}, "missing samples"
        assert entry["teachers"]["t"]["rows"] == 2 * len(labeled)
        engines = _engine_actors()
        assert loss.node.node_id in {a.node_id for a in engines}, "no engine ran on the replacement node"
        print(
            f"labeling: node killed mid-run; {len(keys)} samples; engine restarts {[a.num_restarts for a in engines]}"
        )

        # Inference: the node dies while a new engine, up and serving, has work in flight.
        seen = {a.actor_id for a in engines}
        alive_since: list[float] = []

        def engine_busy() -> bool:
            if not alive_since and any(a.actor_id not in seen and a.state == "ALIVE" for a in _engine_actors()):
                alive_since.append(time.monotonic())
            return bool(alive_since) and time.monotonic() - alive_since[0] > 2.0

        infer_entry, killed = loss.run(lambda: run_infer(cfg, run_dir, model, date="2026-11-23"), engine_busy)
        assert killed, "the node was not killed mid-inference"
        engines = [a for a in _engine_actors() if a.actor_id not in seen]
        assert loss.node.node_id in {a.node_id for a in engines}, "no engine ran on the replacement node"
        ids = pq.read_table(run_dir / "profiles" / "dt=2026-11-23", columns=["user_id"]).column("user_id").to_pylist()
        assert len(ids) == len(set(ids)) and set(ids) == users, "inference lost or duplicated users"
        assert infer_entry["users"] == len(users)
        print(f"inference: node killed mid-run; {len(ids)} users; engine restarts {[a.num_restarts for a in engines]}")
    finally:
        ray.shutdown()
        cluster.shutdown()
        print(f"orphaned engine processes killed: {_kill_orphaned_engines(started)}")
