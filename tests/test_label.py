"""Teacher labeling through the real Ray Data LLM + vLLM (CPU) path on the tiny model."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conf_profile.core.config import build
from conf_profile.core.settings import Config
from conf_profile.core.taxonomy import load_taxonomy
from conf_profile.stages.label import run_label, samples_schema

SMALL_TAXONOMY = """name: small
attributes:
  - name: gender
    description: Gender.
    values:
      - {name: male, definition: "A man."}
      - {name: female, definition: "A woman."}
  - name: age_group
    description: Age.
    values:
      - {name: young, definition: "Under 35."}
      - {name: old, definition: "35 or older."}
"""


@pytest.fixture(scope="module")
def run_dir(ingested_run) -> Path:
    """Documents of 5 built-in users, ingested with a local Ray that the label stage then reuses."""
    root = ingested_run("label", users=5, seed=11)
    (root / "taxonomy.yaml").write_text(SMALL_TAXONOMY)
    return root


def _config(run_dir: Path, *overrides: str) -> Config:
    return build(
        Config,
        overrides=[f"taxonomy.path={run_dir / 'taxonomy.yaml'}", f"models.cache_dir={run_dir / 'cache'}", *overrides],
    )


@pytest.fixture(scope="module")
def labeled(run_dir) -> tuple[Config, dict, str]:
    """Two teachers on the tiny model, a with K=2, b with K=1 at half weight, and c, the zero-shot embedding
    teacher (the embedded MiniLM); with what the stage printed."""
    import contextlib
    import io

    cfg = _config(
        run_dir,
        "label.teachers=[{name: a, model: tiny, samples: 2, max_tokens: 1500},"
        " {name: b, model: tiny, samples: 1, max_tokens: 1500, weight: 0.5},"
        " {name: c, kind: embedding, model: minilm, samples: 1}]",
        "run.progress_interval_s=2",
    )
    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        entry = run_label(cfg, run_dir)
    return cfg, entry, log.getvalue()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_k_samples_by_m_teachers_with_structured_output(run_dir, labeled) -> None:
    cfg, entry, log = labeled
    # Progress from the workers' counter: the final line has every user of each teacher, done
    assert "label: teacher a (teacher_samples): 5/5 users (100%)" in log
    assert "label: teacher b (teacher_samples): 5/5 users (100%)" in log
    assert "label: teacher c (teacher_samples): 5/5 users (100%)" in log
    assert "users/s, ETA" in log  # the periodic lines while the engine works (every 2 s here)
    assert entry["teachers"]["a"]["rows"] == 10 and entry["teachers"]["b"]["rows"] == 5
    assert entry["teachers"]["c"] == {"rows": 5, "valid": 5, "valid_fraction": 1.0, "errors": {}, "output_tokens": 0}
    rows = pq.read_table(run_dir / "teacher_samples").to_pylist()
    documents = pq.read_table(run_dir / "documents", columns=["user_id", "document"]).to_pydict()
    docs = dict(zip(documents["user_id"], documents["document"], strict=True))
    users = {r["user_id"] for r in rows}
    assert len(users) == 5
    for uid in users:
        mine = [(r["teacher"], r["sample"]) for r in rows if r["user_id"] == uid]
        assert sorted(mine) == [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    for r in rows:
        if r["teacher"] == "c":  # the zero-shot teacher: always a value, its evidence a line of the document
            doc = docs[r["user_id"]]
            assert r["error"] is None and r["gender_value"] in ("male", "female") and r["output_tokens"] == 0
            assert r["gender_evidence"] and r["gender_evidence"] in doc and r["input_tokens"] > 0
            assert r["gender_confidence"] == math.ceil(5 * r["gender_token_prob"] - 1e-9)
            continue
        # The grammar holds even for a random model: every output is schema-valid JSON.
        assert r["error"] is None, r["raw_text"]
        assert r["gender_value"] in ("male", "female", "unknown") and 1 <= r["gender_confidence"] <= 5
        assert r["prompt_version"] == entry["prompt_version"] and r["output_tokens"] > 0
        assert r["teacher_weight"] == (1.0 if r["teacher"] == "a" else 0.5)
        # label.token_confidence: the engine's probability of each written value, from its log-probs
        assert 0.0 < r["gender_token_prob"] <= 1.0 and 0.0 < r["age_group_token_prob"] <= 1.0
    schema = samples_schema(load_taxonomy(run_dir / "taxonomy.yaml"))
    assert pq.read_schema(next((run_dir / "teacher_samples" / "a").rglob("*.parquet"))) == schema

    again = run_label(cfg, run_dir)  # resume: nothing left to do
    assert again["teachers"]["a"]["rows"] == 10
    assert again["teachers"]["c"]["rows"] == 5
    assert pq.read_table(run_dir / "teacher_samples").num_rows == 20


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_aggregate_and_evaluate_the_tiny_models_samples(run_dir, labeled) -> None:
    """The aggregate and evaluate stages on real teacher samples (3 per user of the tiny model, 1 of the
    zero-shot teacher)."""
    import json

    from conf_profile.core.student import parse_student_output
    from conf_profile.stages.aggregate import run_aggregate
    from conf_profile.stages.evaluate import run_evaluate

    cfg, _, _ = labeled
    entry = run_aggregate(cfg, run_dir)
    assert entry["users_voted"] == 5 and entry["samples_used"] == 20
    votes = pq.read_table(run_dir / "votes").to_pylist()
    assert len(votes) == 10 and all(v["samples"] == 4 for v in votes)
    for v in votes:
        answered = v["value"] != "unknown"
        assert (v["level"] is not None) == answered and 0.0 <= v["raw_confidence"] <= 1.0
        assert not answered or 0.0 < v["token_confidence"] <= 1.0  # every sample carries token probabilities
    cal = json.loads((run_dir / "calibration.json").read_text())
    assert set(cal["attributes"]) == {"gender", "age_group"} and cal["method"] == "label_free"
    sft = pq.read_table(run_dir / "sft")
    assert sft.num_rows == 5
    taxonomy = load_taxonomy(run_dir / "taxonomy.yaml")
    assert all(
        parse_student_output(m[-1]["content"], taxonomy).error is None for m in sft.column("messages").to_pylist()
    )
    assert entry["rl_users"] + sum(v for k, v in entry["rl_difficulty"].items() if k != "keep") == 5

    # truth for the small taxonomy: gender from the built-in truth, an age group from its age band
    truth = pq.read_table(run_dir / "in" / "truth.parquet").to_pylist()
    young = ("age_18_24", "age_25_34")
    rows = [{"user_id": t["user_id"], "gender": t["gender"], "age_group": "young" if t["age_group"] in young else "old"}
            for t in truth]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "small_truth.parquet")
    report = run_evaluate(cfg, run_dir, str(run_dir / "small_truth.parquet"))
    assert set(report["stages"]) == {"teacher_single", "teacher_majority", "teacher_vote_raw", "teacher_vote",
                                     "teacher_vote_token"}  # fmt: skip
    metrics = json.loads((run_dir / "report" / "metrics.json").read_text())
    gender = metrics["stages"]["teacher_vote"]["attributes"]["gender"]
    assert gender["users"] == 5 and sum(map(sum, gender["confusion"]["matrix"])) == 5
    for name in ("index.html", "reliability.png", "levels.png", "f1.png"):
        assert (run_dir / "report" / name).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_failed_rows_become_error_rows_with_reasons(run_dir, tmp_path) -> None:
    for folder in ("documents", "taxonomy.yaml"):
        (tmp_path / folder).symlink_to(run_dir / folder)
    cfg = _config(
        run_dir,
        "label.engine.max_model_len=600",
        "label.teachers=[{name: short, model: tiny, samples: 1, max_tokens: 32}]",
    )
    entry = run_label(cfg, tmp_path)
    rows = pq.read_table(tmp_path / "teacher_samples").to_pylist()
    assert entry["teachers"]["short"]["rows"] == len(rows) == 5
    assert all(r["error"].startswith("engine: ") and "maximum context length" in r["error"] for r in rows)
    assert entry["teachers"]["short"]["errors"] == {"engine": 5}


@pytest.fixture(scope="module")
def openai_server(run_dir):
    """vLLM's own OpenAI-compatible server on the tiny model, on 127.0.0.1, requiring an API key."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import free_port

    from conf_profile.models import tiny_model_dir

    port = free_port()
    model = tiny_model_dir(run_dir / "cache")
    log = open(run_dir / "server.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
         "tiny-hosted", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096", "--enforce-eager",
         "--dtype", "bfloat16", "--api-key", "test-secret",
         "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(2)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.close()
        pytest.fail(f"the vLLM server did not start:\n{(run_dir / 'server.log').read_text()[-3000:]}")
    yield f"http://127.0.0.1:{port}/v1/chat/completions"
    proc.terminate()
    proc.wait(timeout=60)
    log.close()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.llm
def test_hosted_teacher_over_http_with_a_key_from_the_environment(run_dir, openai_server, tmp_path, monkeypatch):
    for folder in ("documents", "taxonomy.yaml"):
        (tmp_path / folder).symlink_to(run_dir / folder)
    monkeypatch.setenv("CONF_PROFILE_TEST_KEY", "test-secret")
    teacher = (f"label.teachers=[{{name: hosted, model: tiny-hosted, endpoint: '{openai_server}', samples: 2, "
               "max_tokens: 1500, api_key_env: CONF_PROFILE_TEST_KEY, qps: 20}]")  # fmt: skip
    entry = run_label(_config(run_dir, teacher), tmp_path)
    rows = pq.read_table(tmp_path / "teacher_samples").to_pylist()
    assert entry["teachers"]["hosted"]["rows"] == len(rows) == 10
    for r in rows:
        assert r["error"] is None, r["raw_text"]
        assert r["model"] == "tiny-hosted" and r["input_tokens"] > 0 and r["output_tokens"] > 0


@pytest.mark.ray
def test_engine_blocks_are_cut_next_to_an_engine_that_holds_the_cpus(run_dir) -> None:
    """The requests are re-cut into blocks of rows_per_block rows (at least one engine batch) by tasks that
    ask for a fraction of a CPU: with the node's CPUs held as the engines hold them, they still run."""
    import threading

    import ray
    import ray.data

    from conf_profile.core.settings import EngineConfig
    from conf_profile.engines import engine_blocks

    @ray.remote(num_cpus=1.8)  # the module's Ray has 2 CPUs: 0.2 left
    class Holder:
        def ready(self) -> bool:
            return True

    holder = Holder.remote()  # type: ignore[attr-defined]
    ray.get(holder.ready.remote())
    sizes: list[int] = []
    try:
        ds = ray.data.from_items([{"i": i} for i in range(100)], override_num_blocks=2)
        blocks = engine_blocks(ds, 100, EngineConfig(batch_size=8))  # 100 rows: max(8, ceil(100 / 32)) = 8
        cut = threading.Thread(target=lambda: sizes.extend(t.num_rows for t in ray.get(blocks.to_arrow_refs())),
                               daemon=True)  # fmt: skip
        cut.start()
        cut.join(timeout=180)
        assert not cut.is_alive(), "the re-cut waited for a CPU the engine holds"
    finally:
        ray.kill(holder)
    assert sum(sizes) == 100 and max(sizes) == 8 and len(sizes) >= 13


def test_engine_resources_pin_the_engines_to_the_nodes_that_declare_them() -> None:
    from conf_profile.core.settings import EngineConfig
    from conf_profile.engines import processor_config

    cpu = processor_config("/m", EngineConfig(resources={"teacher_node": 1}), "cpu").placement_group_config
    assert [b["teacher_node"] for b in cpu["bundles"]] == [1] and cpu["bundles"][0]["CPU"] == 1
    gpu = processor_config("/m", EngineConfig(resources={"teacher_node": 1}, tensor_parallel_size=2), "gpu")
    assert [(b["GPU"], b["teacher_node"]) for b in gpu.placement_group_config["bundles"]] == [(1, 1), (1, 1)]
    assert processor_config("/m", EngineConfig(), "gpu").placement_group_config is None  # ray.data.llm's default
    for bad in ({"GPU": 1}, {"teacher_node": 0}):
        with pytest.raises(ValueError, match="custom resources only"):
            build(Config, {"label": {"engine": {"resources": bad}}})


def test_requests_carry_the_prompt_the_chat_template_stage_would_render_and_leave_that_stage_out(
    tmp_path, monkeypatch
) -> None:
    import ray.data.llm
    from transformers import AutoProcessor

    from conf_profile import engines
    from conf_profile.core.labeling import chat_messages, system_prompt
    from conf_profile.core.settings import EngineConfig
    from conf_profile.core.taxonomy import load_taxonomy
    from conf_profile.models import tiny_model_dir

    model, system = str(tiny_model_dir(tmp_path / "cache")), system_prompt(load_taxonomy())
    stage = AutoProcessor.from_pretrained(model)  # what ray.data.llm's chat-template stage renders each row with
    request = engines.ChatRequest(system, {"temperature": 0.0}, {"type": "object"}, request_seeds=False)
    frame = engines.chat_frame(model, system)
    assert frame is not None and frame[0].endswith("<user_data>\n") and frame[1].startswith("\n</user_data>")
    framed = engines.ChatRequest(system, {"temperature": 0.0}, {"type": "object"}, request_seeds=False, frame=frame)
    for document in ("search (2 events):\n- 2026-01-02 | strollers  ", "bio: père de deux {enfants}\n"):
        row = {"user_id": "u1", "document": document, "seed": 7}
        want = stage.apply_chat_template(chat_messages(system, document), tokenize=False, add_generation_prompt=True)
        assert framed(row) == {"user_id": "u1", "seed": 7, "prompt": want, "sampling_params": {
            "temperature": 0.0, "structured_outputs": {"json": '{"type": "object"}'}}}  # fmt: skip
        assert request(row)["messages"] == chat_messages(system, document)  # without a frame: the messages
    # a template that does not write the document as it is (it squeezes double spaces), or a model that does
    # not load: no frame. (One that trims each turn keeps it: the document sits inside the turn's delimiters.)
    for name, write in (("squeezes", "m['content'] | replace('  ', ' ')"), ("trims", "m['content'] | trim")):
        (tmp_path / name).mkdir()
        stage.chat_template = "{% for m in messages %}{{ " + write + " }}{% endfor %}"
        stage.save_pretrained(tmp_path / name)
    assert engines.chat_frame(str(tmp_path / "squeezes"), system) is None
    assert engines.chat_frame(str(tmp_path / "trims"), system) == (system + "<user_data>\n", "\n</user_data>")
    assert engines.chat_frame(str(tmp_path / "missing"), system) is None

    # The processor: with a frame the chat-template stage is left out and the requests carry the prompt
    built = []
    monkeypatch.setattr(engines, "_PRELOAD", None)
    monkeypatch.setattr(ray.data.llm, "build_processor", lambda config, **kw: built.append((config, kw)))
    for path, enabled in ((model, False), (str(tmp_path / "squeezes"), True)):
        engines.vllm_processor(path, EngineConfig(), "cpu", preprocess=request, postprocess=None)
        config, kwargs = built.pop()
        assert config.chat_template_stage.enabled is enabled
        assert kwargs["preprocess"].frame == (None if enabled else frame)
    assert engines.processor_config(model, EngineConfig(), "cpu").chat_template_stage.enabled is True


def test_the_engine_modules_are_imported_once_on_a_thread_that_the_processor_and_the_exit_wait_for(
    monkeypatch,
) -> None:
    import threading
    import time

    import ray.data.llm

    from conf_profile import engines
    from conf_profile.core.settings import EngineConfig

    imported, at_exit, built = [], [], []

    def slow_import() -> None:  # test double for the real imports (seconds of transformers, torch and vLLM)
        time.sleep(0.3)
        imported.append(threading.current_thread().name)

    monkeypatch.setattr(engines, "_PRELOAD", None)
    monkeypatch.setattr(engines, "_import_engine_modules", slow_import)
    monkeypatch.setattr(engines.atexit, "register", at_exit.append)
    monkeypatch.setattr(ray.data.llm, "build_processor", lambda *a, **k: built.append(list(imported)) or "processor")
    engines.preload_engine_modules()
    engines.preload_engine_modules()  # once per process
    thread = engines._PRELOAD
    assert thread is not None and thread.is_alive() and at_exit == [thread.join]
    processor = engines.vllm_processor("/m", EngineConfig(), "cpu", preprocess=None, postprocess=None)
    # the processor is built only once the import thread is done
    assert processor == "processor" and built == [["preload-engine-modules"]] and not thread.is_alive()
    # with the dataflow benchmark's stand-in engine nothing is imported
    monkeypatch.setattr(engines, "_PRELOAD", None)
    monkeypatch.setattr(engines, "_STAND_IN", object())
    engines.preload_engine_modules()
    assert engines._PRELOAD is None and len(imported) == 1


def test_label_sets_are_the_first_users_then_the_next_heldout_users() -> None:
    from conf_profile.core.settings import LabelConfig
    from conf_profile.stages.label import label_sets

    first = [f"u{i}" for i in range(7)]  # first_users: the first max_users + heldout_users ids in order
    assert label_sets(first, LabelConfig(max_users=4, heldout_users=3)) == (
        ["u0", "u1", "u2", "u3"],
        ["u4", "u5", "u6"],
    )
    first = [f"u{i}" for i in range(10)]  # only 10 users: 2 are left to hold out
    assert label_sets(first, LabelConfig(max_users=8, heldout_users=5)) == ([f"u{i}" for i in range(8)], ["u8", "u9"])
    with pytest.raises(ValueError, match="none is left to hold out"):
        LabelConfig(max_users=0, heldout_users=2).validate()


def test_requests_fan_each_user_out_into_k_rows_with_seeds_and_provenance() -> None:
    from conf_profile.core.labeling import sample_seed
    from conf_profile.core.settings import TeacherConfig
    from conf_profile.stages.label import _Requests

    teacher = TeacherConfig(name="a", model="tiny", samples=3, weight=0.5, seed=9)
    docs = pa.table({"user_id": ["u1", "u2"], "document": ["d1", "d2"], "content_hash": ["h1", "h2"]})
    out = _Requests(teacher, "/models/tiny", "tax-v", "prompt-v")(docs)
    assert out.num_rows == 6
    assert list(zip(out["user_id"].to_pylist(), out["sample"].to_pylist(), strict=True)) == [
        ("u1", 0), ("u1", 1), ("u1", 2), ("u2", 0), ("u2", 1), ("u2", 2)]  # fmt: skip
    assert out["document"].to_pylist()[3:] == ["d2"] * 3 and out["content_hash"].to_pylist()[:3] == ["h1"] * 3
    assert out["seed"].to_pylist()[5] == sample_seed(9, "a", "u2", 2)
    assert set(out["teacher_weight"].to_pylist()) == {0.5} and set(out["prompt_version"].to_pylist()) == {"prompt-v"}
    assert out.schema.field("sample").type == samples_schema(load_taxonomy()).field("sample").type  # the join key


def test_done_keys_are_this_prompt_versions_keys_only() -> None:
    from conf_profile.stages.label import DONE_KEY, _with_version

    keys = pa.table({"user_id": ["u1", "u1", "u2"], "sample": pa.array([0, 1, 0], pa.int32()),
                     "content_hash": ["h", "h", "h"], "prompt_version": ["v1", "v2", "v1"]})  # fmt: skip
    done = _with_version(keys, "v1")
    assert done.column_names == list(DONE_KEY) and done["sample"].to_pylist() == [0, 0]


def test_the_split_write_sends_the_heldout_users_rows_to_their_own_folder(tmp_path) -> None:
    from types import SimpleNamespace

    from conf_profile.stages.label import split_write

    task = SimpleNamespace(task_idx=7)  # a stand-in for Ray Data's TaskContext (only its index is read)
    blocks = [pa.table({"user_id": ["u1", "u3"], "sample": [0, 0]}), pa.table({"user_id": ["u4"], "sample": [1]})]
    sink = split_write(tmp_path / "train", tmp_path / "heldout", ["u3", "u9"])
    assert sink.write(iter(blocks), task) == 3
    assert pq.read_table(tmp_path / "train" / "task-000007.parquet").column("user_id").to_pylist() == ["u1", "u4"]
    assert pq.read_table(tmp_path / "heldout" / "task-000007.parquet").column("user_id").to_pylist() == ["u3"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]  # no temp files
    alone = split_write(tmp_path / "one", None, [])
    assert alone.write(iter(blocks), SimpleNamespace(task_idx=0)) == 3
    assert pq.read_table(tmp_path / "one" / "task-000000.parquet").num_rows == 3
    assert alone.write(iter([pa.table({"user_id": pa.array([], pa.string())})]), SimpleNamespace(task_idx=1)) == 0
    assert not (tmp_path / "one" / "task-000001.parquet").exists()  # an empty task writes no file


def test_the_driver_imports_the_engine_stage_without_vllm_and_leaves_vllm_importable() -> None:
    import subprocess
    import sys

    # A fresh interpreter: the test process may have imported vLLM already (then the function does nothing).
    code = """
import importlib.util, sys
from conf_profile import engines
engines.import_stage_modules_without_vllm()
from ray.llm._internal.common import errors
engines.import_stage_modules_without_vllm()  # a second call changes nothing
print(sorted(k for k in sys.modules if k == "vllm" or k.startswith("vllm.")), errors.VLLM_FATAL_ERRORS,
      importlib.util.find_spec("vllm") is not None)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    # nothing of vLLM imported, the fatal-error tuple empty in this process, and vLLM still importable
    assert out.stdout.split("\n")[-2] == "[] () True", out.stdout + out.stderr


@pytest.mark.ray
def test_the_engine_actors_import_the_stage_afresh_and_catch_vllms_fatal_engine_error(run_dir) -> None:
    import ray
    import ray.llm._internal.batch.stages.vllm_engine_stage as stage

    # The stage's class travels to its actors by reference (cloudpickle), so each actor's process imports
    # the module itself, with vLLM, whatever the driver's copy holds.
    @ray.remote(num_cpus=0.1)
    def fatal_errors(udf: type) -> list[str]:
        import sys

        return [e.__name__ for e in sys.modules[udf.__module__]._VLLM_FATAL_ERRORS]

    assert ray.get(fatal_errors.remote(stage.vLLMEngineStageUDF)) == ["EngineDeadError"]
