"""The typed configuration of every job: one dataclass section per stage.

A YAML config file has the same shape (``data: {users: 300}``); ``--set data.users=300`` overrides one key.
Later stages add their sections here. Each section's ``validate()`` raises ``ValueError`` naming the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from conf_profile.core.config import build, merge
from conf_profile.core.documents import default_source_budgets
from conf_profile.core.events import SOURCES, parse_time_ms
from conf_profile.core.hardware import DTYPES
from conf_profile.core.mapping import InputMapping


@dataclass
class TaxonomyConfig:
    path: str | None = None  # YAML file; None = the default six-dimension taxonomy shipped with the package


@dataclass
class InputConfig:
    """What the pipeline reads."""

    logs: str | None = None  # Parquet/JSONL logs (file, folder or URI); None = the built-in synthetic set
    # Truth for the evaluation stage: Parquet with user_id + one column per attribute (the built-in set
    # brings its own); None = no evaluation.
    truth: str | None = None


@dataclass
class DataConfig:
    """The built-in synthetic data set (``jobs.make_logs``, and the demo's input)."""

    users: int = 56  # the demo profiles all of them on CPU; make_logs --users sets any size
    seed: int = 0  # the same seed writes the same data set
    bad_fraction: float = 0.02  # share of malformed rows mixed in (they must end in rejects/)
    files: int = 4  # Parquet files the logs are split into
    hostile_fraction: float = 0.05  # share of users given a prompt-injection comment (synthetic/hostile.py)

    def validate(self) -> None:
        if self.users < 1:
            raise ValueError(f"users={self.users}: must be at least 1")
        if not 0.0 <= self.bad_fraction < 1.0:
            raise ValueError(f"bad_fraction={self.bad_fraction}: must be in [0, 1), e.g. 0.02")
        if not 0.0 <= self.hostile_fraction <= 1.0:
            raise ValueError(f"hostile_fraction={self.hostile_fraction}: must be in [0, 1]")
        if not 1 <= self.files <= 4096:
            raise ValueError(f"files={self.files}: must be between 1 and 4096")


@dataclass
class ModelsConfig:
    """Where the embedded models are prepared, and the student model (teachers: ``label.teachers``)."""

    cache_dir: str | None = None  # None = $CONF_PROFILE_CACHE or ~/.cache/conf-profile
    student: str = "demo"  # "demo" (SmolLM2-135M), "tiny" (test model), a model folder, its URI (s3://...) or a hub id


@dataclass
class IngestConfig:
    """``jobs.ingest``: raw logs -> documents/ + rejects/ (docs/architecture.md 1)."""

    format: Literal["auto", "parquet", "jsonl", "csv"] = "auto"  # auto: by file extension
    # Which columns hold the user, event id, time and type, and how each event type renders into the
    # document (core/mapping.py; README "Your own data"). The default is the built-in layout.
    mapping: InputMapping = field(default_factory=InputMapping)
    token_budget: int = 1200  # the whole document (estimated tokens, see core.events.estimate_tokens)
    source_budgets: dict[str, int] = field(default_factory=default_source_budgets)  # estimated tokens per source
    max_field_chars: int = 20_000  # a longer text field is rejected as oversize_text
    max_line_chars: int = 300  # one event's line in the document
    max_future_days: float = 1.0  # events later than the job's start plus this are clock-skewed
    min_event_time: str = "2000-01-01"  # events before this date (ISO 8601, UTC) are timestamp_out_of_range
    buckets: int = 0  # hash buckets of users; 0 = one per bucket_mb of input
    bucket_mb: int = 8  # input per hash bucket when buckets = 0
    block_mb: int = 32  # Ray Data's target block size
    split_mb: int = 64  # Parquet row groups read by one pass-1 task (compressed bytes)
    batch_rows: int = 8192  # rows per validation batch
    cpus_per_task: float = 0.5  # fractional, so that small nodes run tasks side by side (docs/architecture.md 3)

    def validate(self) -> None:
        unknown = set(self.source_budgets) - set(SOURCES)
        if unknown:
            raise ValueError(f"source_budgets: unknown sources {sorted(unknown)}; known: {', '.join(SOURCES)}")
        if self.token_budget < 50:
            raise ValueError(f"token_budget={self.token_budget}: must be at least 50")
        if any(v < 0 for v in self.source_budgets.values()):
            raise ValueError("source_budgets: budgets must be >= 0")
        for name in ("max_field_chars", "max_line_chars", "bucket_mb", "block_mb", "split_mb", "batch_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 1")
        if parse_time_ms(self.min_event_time) is None:
            raise ValueError(f"min_event_time={self.min_event_time!r}: must be an ISO 8601 date, e.g. 1990-01-01")
        self.mapping.validate()
        if self.buckets < 0 or not 0 < self.cpus_per_task <= 64:
            raise ValueError("buckets must be >= 0 and cpus_per_task in (0, 64]")


@dataclass
class TeacherConfig:
    """One teacher: its model, its vote weight and how it samples. With no ``label.teachers`` given, the panel
    is this default (the demo LLM, K = 2) and ``{name: zero_shot, kind: embedding, model: minilm, samples: 1,
    weight: 3}``."""

    name: str = "teacher"  # recorded in teacher_samples/; unique per teacher
    # "demo", "tiny", "minilm" (an embedding teacher's), a model folder, its URI (s3://...) or a hub id
    # (models.py resolve_model)
    model: str = "demo"
    # llm: a chat model generates the JSON (vLLM or an endpoint). embedding: a zero-shot teacher without
    # generation, a sentence-embedding model (model "minilm": the embedded all-MiniLM-L6-v2, or a folder of
    # one) matching the log lines to the value definitions (core/zero_shot.py); deterministic, so samples: 1.
    kind: Literal["llm", "embedding"] = "llm"
    weight: float = 1.0  # the teacher's weight in the vote
    samples: int = 2  # K samples per user (one row each, distinct seeds); 2 keeps the CPU demo short, use 5+
    temperature: float = 0.8  # sampling temperature (> 0: the K samples differ)
    top_p: float = 0.95  # nucleus sampling
    # The schema bounds an output to ~1,100 characters; degenerate outputs (emoji loops) take 2+ tokens per
    # character, so 768 cut 1 of 160 demo outputs short. Outputs stop at the schema bound, not here.
    max_tokens: int = 1536
    seed: int = 0  # base of the per-sample seeds (GPU; vLLM on CPU draws from the engine's seed)
    # A hosted teacher: an OpenAI-compatible chat completions URL (then `model` is the served model's name).
    endpoint: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from the config
    qps: float | None = None  # request rate limit per replica (None: no limit)
    max_retries: int = 3  # with exponential backoff, on 429/5xx and connection errors
    http_concurrency: int = 1  # replicas of the HTTP stage
    # This teacher's engine settings over label.engine, e.g. {tensor_parallel_size: 4, replicas: 2,
    # max_model_len: 8192} for a large teacher beside a small one (any key of label.engine)
    engine: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"name={self.name!r}: use letters, digits, '-' and '_' only")
        if self.weight <= 0 or self.samples < 1 or self.max_tokens < 16:
            raise ValueError("weight must be > 0, samples >= 1 and max_tokens >= 16")
        if not 0.0 <= self.temperature <= 2.0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("temperature must be in [0, 2] and top_p in (0, 1]")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint={self.endpoint!r}: must be an http(s) URL of /v1/chat/completions")
        if self.max_retries < 0 or self.http_concurrency < 1 or (self.qps is not None and self.qps <= 0):
            raise ValueError("max_retries must be >= 0, http_concurrency >= 1, qps > 0 when set")
        if self.kind == "embedding" and (self.samples != 1 or self.endpoint or self.model in ("demo", "tiny")):
            raise ValueError(
                f"teacher {self.name!r} of kind embedding: set samples: 1 (it is deterministic), no "
                f"endpoint, and model: minilm or a sentence-embedding model folder (got samples="
                f"{self.samples}, model={self.model!r})"
            )


@dataclass
class EngineConfig:
    """vLLM engine settings shared by the LLM stages (ray.data.llm on GPU or CPU)."""

    device: Literal["auto", "cpu", "gpu"] = "auto"  # auto: gpu when the Ray cluster has GPUs
    tensor_parallel_size: int = 1  # GPUs per engine replica (a teacher larger than one GPU)
    replicas: int = 1  # engine actors (ray.data.llm concurrency)
    batch_size: int = 16  # rows per batch sent to an engine replica
    # Batches in flight per replica (rows in flight = this x batch_size). More rows than the engine runs at once
    # (about 60-70 demo-model sequences fit the CPU's 1 GB KV cache): a batch keeps its rows until its slowest
    # is done, so with 4 x 16 in flight the engine ran at most 48 sequences. 8: the infer job 10% faster at 160
    # users (jobs.bench infer, README), as Ray Data's own warning below 8 advises.
    max_concurrent_batches: int = 8
    max_model_len: int = 4096  # prompt + output tokens per sequence
    gpu_memory_utilization: float = 0.9  # share of GPU memory vLLM may take (weights + KV cache)
    cpu_kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE on CPU
    # auto: eager on CPU (torch.compile costs ~60 s of start-up there for ~15% speed), CUDA graphs on GPU.
    # Not false on an AVX2-only CPU: compiled, vLLM's sampler picks tokens the grammar masks out there.
    enforce_eager: bool | Literal["auto"] = "auto"
    max_num_seqs: int = 0  # sequences the engine schedules at once (0: vLLM's default; jobs.plan sizes it)
    # auto: bfloat16 on CPUs with AVX-512 BF16 or AMX, float32 on other CPUs (bf16 is several times slower
    # there), the checkpoint's dtype on GPU (core/hardware.py); or bfloat16, float16, float32
    dtype: str = "auto"
    # Custom Ray resources each engine bundle asks for, to pin the engines to a node type that declares
    # them (e.g. {teacher_gpu: 1} with `resources: {teacher_gpu: 8}` on that node type in cluster.yaml).
    # Empty: the teachers' engines ask one `teacher` unit each when the cluster declares that resource
    # (cluster.yaml's gpu_teacher nodes), else nothing.
    resources: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if {"CPU", "GPU", "memory"} & set(self.resources) or any(v <= 0 for v in self.resources.values()):
            raise ValueError(f"resources={self.resources}: custom resources only (not CPU/GPU/memory), each > 0")
        if min(self.tensor_parallel_size, self.replicas, self.batch_size, self.max_concurrent_batches) < 1:
            raise ValueError("tensor_parallel_size, replicas, batch_size and max_concurrent_batches must be >= 1")
        if self.max_num_seqs < 0 or self.max_model_len < 256:
            raise ValueError("max_num_seqs must be >= 0 (0: vLLM's default) and max_model_len >= 256")
        if not 0.05 <= self.gpu_memory_utilization <= 0.98:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization}: must be in [0.05, 0.98]")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: use one of {', '.join(DTYPES)}")


@dataclass
class LabelConfig:
    """``jobs.label``: documents/ -> teacher_samples/ (K samples x M teachers per user)."""

    # The demo's panel: the LLM and the zero-shot embedding teacher (core/zero_shot.py) at weight 3, one teacher's
    # say per user against the LLM's K samples; chosen on a development set of the built-in data (seed 7, not a
    # benchmark's users): macro F1 of the vote at weight 0.5/1/2/3/4/6 was 0.25/0.32/0.42/0.42/0.41/0.41, the
    # LLM's own vote 0.16 and the zero-shot teacher's 0.41.
    teachers: list[TeacherConfig] = field(
        default_factory=lambda: [
            TeacherConfig(),
            TeacherConfig(name="zero_shot", kind="embedding", model="minilm", samples=1, weight=3.0),
        ]
    )
    engine: EngineConfig = field(default_factory=EngineConfig)
    # Label only the first N users by user_id (0 = all). The default sizes the CPU demo; the student
    # profiles every user at inference. Production configs set 0 or the size of the distillation set.
    max_users: int = 24
    # The teacher also labels the next N users by user_id (after the first max_users) into
    # teacher_samples_heldout/, for scoring only: the report then puts every stage, teacher and student, on
    # the same held-out users (the quality ladder). Nothing is trained on them. The default sizes the demo;
    # production runs without truth set 0.
    heldout_users: int = 16
    structured_output: bool = True  # vLLM constrains outputs to the taxonomy's JSON schema
    # Record each written value's token probability (<attr>_token_prob; the engine's log-probs of the value's
    # tokens): a confidence beside the stated level, which small models state degenerately.
    token_confidence: bool = True

    def engine_for(self, teacher: TeacherConfig) -> EngineConfig:
        """label.engine with the teacher's own engine settings over it."""
        import dataclasses

        if not teacher.engine:
            return self.engine
        return build(EngineConfig, merge(dataclasses.asdict(self.engine), teacher.engine))

    def validate(self) -> None:
        for teacher in self.teachers:
            try:
                self.engine_for(teacher)
            except ValueError as exc:
                raise ValueError(f"teachers ({teacher.name}).engine: {exc}") from exc
        names = [t.name for t in self.teachers]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"teachers: need at least one, with distinct names; got {names}")
        if self.max_users < 0 or self.heldout_users < 0:
            raise ValueError("max_users and heldout_users must be >= 0")
        if self.heldout_users and not self.max_users:
            raise ValueError(f"heldout_users={self.heldout_users} with max_users=0: every user is labeled for "
                             "training, none is left to hold out; set label.max_users")  # fmt: skip


@dataclass
class AggregateConfig:
    """``jobs.aggregate``: teacher_samples/ -> votes/, calibration.json, sft/, rl/."""

    # Vote weight of a judgement per stated confidence 1..5 (times its teacher's weight); default linear c/5.
    confidence_weights: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8, 1.0])
    # Teacher weights in the vote: "fixed" = each teacher's label.teachers[].weight; "em" = that times a
    # label-free estimate of the teacher's reliability per attribute (one-coin Dawid-Skene EM over the
    # teachers' judgements). EM needs three or more teachers (with two, agreement cannot tell which one is
    # right); with fewer it is skipped and the fixed weights stay.
    teacher_weights: Literal["fixed", "em"] = "fixed"
    calibration: str | None = None  # reuse this calibration.json instead of fitting one on this run
    gold: str | None = None  # a truth-format Parquet (user_id + attribute columns): isotonic fit to its accuracy
    eval_percent: int = 10  # share of users (by id hash) in the SFT eval split
    sft_min_mean_level: float = 0.0  # drop SFT examples whose mean calibrated level is lower (0: keep all)
    rl_easy_min_confidence: float = 5.0  # unanimous votes at this mean confidence or above are "easy": dropped
    rl_min_mean_level: float = 1.5  # users whose mean calibrated level is below are "noise": dropped
    buckets: int = 0  # hash buckets of users the stage works through one at a time; 0 = one per bucket_mb
    bucket_mb: int = 8  # Parquet of teacher_samples/ + documents/ per bucket when buckets = 0 (memory: ~30x that)

    def validate(self) -> None:
        if self.buckets < 0 or self.bucket_mb < 1:
            raise ValueError(f"buckets={self.buckets} must be >= 0 and bucket_mb={self.bucket_mb} >= 1")
        if len(self.confidence_weights) != 5 or min(self.confidence_weights) < 0:
            raise ValueError(f"confidence_weights={self.confidence_weights}: need 5 weights >= 0 (levels 1..5)")
        if not 0 <= self.eval_percent <= 50:
            raise ValueError(f"eval_percent={self.eval_percent}: must be in [0, 50]")
        if not 0 <= self.sft_min_mean_level <= 5 or not 0 <= self.rl_min_mean_level <= 5:
            raise ValueError("sft_min_mean_level and rl_min_mean_level are levels: use a value in [0, 5]")


@dataclass
class TrainerSettings:
    """What the two training stages share: Ray Train workers, DeepSpeed, batch, checkpoints."""

    device: Literal["auto", "cpu", "gpu"] = "auto"  # auto: gpu when the Ray cluster has GPUs
    # Ray Train workers (one process each; one GPU each on GPU). 0 = auto: on GPU the GPUs of the nodes that
    # declare the `trainer` resource (cluster.yaml's gpu_train), or of every GPU node; on CPU 2.
    workers: int = 0
    # Custom Ray resources each worker asks for, to pin training to a node type; empty: one `trainer` unit
    # when the cluster declares that resource, else nothing.
    resources: dict[str, float] = field(default_factory=dict)
    cpus_per_worker: float = 1.0  # CPUs reserved per worker
    zero_stage: int = 2  # DeepSpeed ZeRO stage: 2 or 3
    offload_optimizer: bool = False  # optimizer state in CPU memory (DeepSpeed CPU Adam, JIT-compiled on first use)
    offload_params: bool = False  # parameters in CPU memory (stage 3 only)
    micro_batch_size: int = 1  # per worker per step
    grad_accum: int = 2  # gradient accumulation steps
    global_batch_size: int | None = None  # when set, must equal micro_batch_size x grad_accum x workers
    epochs: float = 1.0  # passes over the set (when max_steps = 0)
    max_steps: int = 0  # > 0 overrides epochs
    learning_rate: float = 1e-4  # peak learning rate
    save_steps: int = 10  # checkpoint every N optimizer steps (resume point after a failure)
    max_failures: int = 1  # Ray Train restarts from the last checkpoint this many times
    storage_path: str | None = None  # checkpoints: local folder or cloud URI; None = <run_dir>/checkpoints
    gradient_checkpointing: bool = False  # saves activation memory on large students, costs ~30% time
    # Weights and activations: auto is bfloat16 on GPU, float32 on CPU. bfloat16 on a CPU with AVX-512 BF16 or
    # AMX trains 1.3-2.2x faster (DeepSpeed keeps float32 master weights) but its students scored lower side by
    # side on the same teacher labels (README, "Training precision"); on other CPUs it is several times slower.
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    # Training metrics (loss, learning rate, rewards, KL) per step: tensorboard writes them to
    # <run_dir>/tensorboard/<stage>/ (tensorboard --logdir there); mlflow to MLFLOW_TRACKING_URI (needs the
    # mlflow package); none: the progress lines only
    report_to: Literal["tensorboard", "mlflow", "none"] = "tensorboard"
    seed: int = 0  # data order and initialisation

    def validate(self) -> None:
        if self.zero_stage not in (2, 3):
            raise ValueError(f"zero_stage={self.zero_stage}: use 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage: 3")
        if min(self.micro_batch_size, self.grad_accum, self.save_steps) < 1 or min(self.max_steps, self.workers) < 0:
            raise ValueError("micro_batch_size, grad_accum and save_steps must be >= 1, max_steps and workers >= 0")
        if {"CPU", "GPU", "memory"} & set(self.resources) or any(v <= 0 for v in self.resources.values()):
            raise ValueError(f"resources={self.resources}: custom resources only (not CPU/GPU/memory), each > 0")
        if self.global_batch_size is not None and not self.workers:  # auto: the full check once resolved
            per_worker = self.micro_batch_size * self.grad_accum
            if self.global_batch_size % per_worker:
                raise ValueError(f"global_batch_size={self.global_batch_size} is no multiple of micro_batch_size x "
                                 f"grad_accum = {per_worker}: no worker count gives it")  # fmt: skip
        if self.global_batch_size is not None and self.workers:
            from conf_profile.core.training import global_batch

            global_batch(self.micro_batch_size, self.grad_accum, self.workers, self.global_batch_size)
        if self.learning_rate <= 0 or self.epochs <= 0:
            raise ValueError("learning_rate and epochs must be > 0")


@dataclass
class TrainSftConfig(TrainerSettings):
    """``jobs.train_sft``: Ray Train workers running TRL's SFTTrainer under DeepSpeed on sft/.
    The default global batch is 4 (1 x 2 x 2 workers): ~37 s a step for the demo model on 2 CPU cores."""

    max_steps: int = 4  # the CPU demo's size (~1 epoch of its ~20 examples); production sets 0 (epochs)
    max_length: int = 2560  # tokens per example (prompt + target); longer ones are truncated
    lora: bool = False  # LoRA adapters (peft) instead of full fine-tuning, for large students
    lora_r: int = 16  # LoRA rank
    lora_alpha: int = 32  # LoRA scaling

    def validate(self) -> None:
        super().validate()
        if self.max_length < 64:
            raise ValueError("max_length must be >= 64")


@dataclass
class TrainRlConfig(TrainerSettings):
    """``jobs.train_rl``: GRPO (TRL GRPOTrainer) on rl/ from models/sft/, confidence-guided rewards."""

    # A worker generates micro_batch_size x grad_accum rollouts at once (TRL's steps_per_generation =
    # grad_accum) and scores them together, so that must hold whole groups; the loss then runs one rollout
    # at a time (a 2k-token sequence's logits over a 49k vocabulary are ~0.4 GB in fp32).
    micro_batch_size: int = 1
    grad_accum: int = 2  # TRL generates micro x grad_accum rollouts per worker: whole groups of G
    max_steps: int = 1  # the CPU demo's size (~170 s a step on 2 cores); production sets 0 (epochs) or its own count
    learning_rate: float = 5e-6  # peak learning rate (small: RL from the SFT model)
    num_generations: int = 2  # G rollouts per prompt: the CPU demo's size (~4 min a step at 4); use 8 or more
    max_completion_length: int = 384  # a student output is ~250 tokens
    temperature: float = 0.7  # rollouts of a 135M student parse 75% of the time at 0.7, ~10% at 1.0
    beta: float = 0.04  # KL coefficient against the SFT model (0: no reference model, no KL)
    use_vllm: Literal["auto", "on", "off"] = "auto"  # auto: vLLM colocate on GPU, transformers on CPU
    constrained: bool = True  # transformers rollouts decode under the student's JSON schema, as inference does
    teacher_voter_weight: float = 1.0  # the teacher vote joins the rollouts' vote with this weight x its share (0: not)
    calibration_weight: float = 0.5  # weight of the calibration reward (1 - Brier)

    def validate(self) -> None:
        super().validate()
        if self.num_generations < 2 or (self.micro_batch_size * self.grad_accum) % self.num_generations:
            raise ValueError(f"micro_batch_size x grad_accum = {self.micro_batch_size * self.grad_accum} must be a "
                             f"multiple of num_generations={self.num_generations} (>= 2): a worker scores whole "
                             "groups of rollouts")  # fmt: skip
        if self.max_completion_length < 16 or self.temperature <= 0 or self.beta < 0:
            raise ValueError("max_completion_length >= 16, temperature > 0 and beta >= 0 are required")
        if self.teacher_voter_weight < 0 or self.calibration_weight < 0:
            raise ValueError("teacher_voter_weight and calibration_weight must be >= 0")


@dataclass
class InferConfig:
    """``jobs.infer``: the student on vLLM actors (Ray Data LLM) -> profile tables."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    temperature: float = 0.0  # greedy: a nightly refresh gives the same profile for the same document
    max_tokens: int = 1024  # a student output is ~250 tokens; the schema bounds it
    date: str | None = None  # partition date YYYY-MM-DD of profiles/dt=DATE (None: today, UTC)
    samples: int = 1  # self-consistency: k outputs per user, confidence-weighted vote (needs temperature > 0)
    seed: int = 0  # base of the per-sample seeds (GPU; vLLM on CPU draws from the engine's seed)
    max_users: int = 0  # profile only the first N users by user_id (0 = all)
    exclude_labeled: bool = False  # leave out users the teacher labeled (held-out evaluation of the student)
    # a truth-format Parquet (user_id + attribute columns): the student also profiles these users and the
    # confidence of its levels is refitted on its answers for them (isotonic; calibration_student.json);
    # they are kept out of predictions/ (in-sample)
    gold: str | None = None

    def validate(self) -> None:
        if not 0.0 <= self.temperature <= 2.0 or self.max_tokens < 16 or self.max_users < 0:
            raise ValueError("temperature must be in [0, 2], max_tokens >= 16, max_users >= 0")
        if self.date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.date):
            raise ValueError(f"date={self.date!r}: use YYYY-MM-DD")
        if not 1 <= self.samples <= 64:
            raise ValueError(f"samples={self.samples}: must be between 1 and 64")
        if self.samples > 1 and self.temperature == 0.0:
            raise ValueError(f"samples={self.samples} with temperature=0 repeats one greedy output: set "
                             "infer.temperature (e.g. 0.7) or infer.samples=1")  # fmt: skip


@dataclass
class NightlyConfig:
    """``jobs.nightly``: the refresh of users with new activity, published only when the quality gates pass."""

    root: str = "nightly"  # the table store (its tables: README "Nightly refresh")
    # iceberg: Apache Iceberg tables, one commit per table per night, rollback and reads as of a night;
    # parquet: Hive-style folders profiles/dt=D/ ... and watermark.json, for readers that need plain files.
    table_format: Literal["iceberg", "parquet"] = "iceberg"
    # pyiceberg catalog properties, e.g. {type: rest, uri: https://...} or {type: glue}; empty: a SQL
    # catalog in <root>/catalog.db (SQLite) with the data in <root>/warehouse/.
    catalog: dict[str, str] = field(default_factory=dict)
    namespace: str = "conf_profile"  # the catalog namespace of the tables
    # true: a night reads only the input files that arrived since the last night (by path, size and
    # modification time) and rebuilds their users' documents with the events the store keeps; false: every
    # file, every night. A first night, a new model or other ingest settings read every file anyway.
    incremental: bool = True
    max_parse_failure_rate: float = 0.05  # share of users whose output did not parse
    max_abstain_rate: float = 0.95  # share of attribute cells left unknown (parsed users)
    max_drift: float = 0.25  # total variation distance of any attribute's value distribution vs the previous night
    min_users_for_drift: int = 50  # smaller nights (or previous nights) skip the drift gate: they move by chance

    def validate(self) -> None:
        for name in ("max_parse_failure_rate", "max_abstain_rate", "max_drift"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)}: must be in [0, 1]")
        if self.min_users_for_drift < 1:
            raise ValueError(f"min_users_for_drift={self.min_users_for_drift}: must be at least 1")


@dataclass
class PrivacyConfig:
    """Data protection in the output tables."""

    pseudonymize_ids: bool = False  # user_id in profiles/, profile_attributes/, profiles_latest/ = HMAC of the id
    key_env: str = "CONF_PROFILE_ID_KEY"  # the environment variable holding the key (never the config itself)

    def validate(self) -> None:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", self.key_env):
            raise ValueError(f"key_env={self.key_env!r}: an environment variable name, e.g. CONF_PROFILE_ID_KEY")


@dataclass
class RayConfig:
    """How to reach Ray. Under ``ray job submit`` (RAY_ADDRESS set) the job joins that cluster and these
    local settings are ignored; otherwise a local Ray starts on this machine with them."""

    local_num_cpus: int | None = None  # None = all cores
    # The object store's pages stay resident once touched, so its size is what a local run's memory grows
    # to; 2 GiB keeps a laptop or CI run flat (Ray's default is 30% of RAM).
    local_object_store_mb: int = 2048

    def validate(self) -> None:
        if self.local_object_store_mb < 100:
            raise ValueError(f"local_object_store_mb={self.local_object_store_mb}: must be at least 100")


@dataclass
class RunConfig:
    # where new run directories are created (runs/<run_id>/, runs/latest): a folder, or an object-store URI
    # (s3://bucket/runs; credentials and endpoint from the environment, as pyarrow reads them)
    runs_root: str = "runs"
    # Labeling and inference print users done, users/s and an ETA this often (0: only at the end)
    progress_interval_s: float = 30.0

    def validate(self) -> None:
        if self.progress_interval_s < 0:
            raise ValueError(f"progress_interval_s={self.progress_interval_s}: must be >= 0 (0: only at the end)")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    input: InputConfig = field(default_factory=InputConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    train_sft: TrainSftConfig = field(default_factory=TrainSftConfig)
    train_rl: TrainRlConfig = field(default_factory=TrainRlConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
