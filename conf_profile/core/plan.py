"""Sizing the teacher labeling (or inference) job: tensor parallel size, replicas, batch sizes and a time
estimate, from the model's size and shape, the GPU and the number of users. ``python -m jobs.plan`` prints it.

The model (an estimate to start from; measure with ``jobs.bench label`` and pass --tokens-per-s to replace
the decode estimate):
- Weights take ``params x bytes_per_param``; tensor parallel size (TP) = the smallest power of two <= 8 at
  which a GPU's share of the weights is at most ``weight_share`` of its usable memory (the rest is KV
  cache). Replicas = GPUs // TP.
- KV cache per replica = TP x (usable memory - weight share - ``overhead_gb``); a sequence needs
  ``kv_bytes_per_token x (prompt + output tokens)``, so sequences in flight = KV cache / that (capped at
  ``max_seqs``). Prefix caching shares the common prompt prefix, so this is conservative.
- Decode is memory-bound: one step reads the GPU's weight share and the KV of every sequence in flight, at
  ``efficiency x`` the memory bandwidth; each step emits one token per sequence.
- Prefill is compute-bound: ``2 x params`` FLOPs per prompt token at ``efficiency x`` peak, minus the share
  of the prompt served from the prefix cache.

>>> model = ModelShape("m", params_b=8.0, layers=36, kv_heads=8, head_dim=128)
>>> p = plan(model, GPUS["h100"], gpus=8, users=1_000_000, samples=5)
>>> p.tensor_parallel, p.replicas, p.max_num_seqs  # KV: (72 - 16 - 2) GB / (147,456 B x 1,800 tokens)
(1, 8, 203)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelShape:
    name: str
    params_b: float  # billions of parameters
    layers: int
    kv_heads: int
    head_dim: int
    active_params_b: float | None = None  # mixture of experts: parameters used per token (None: all)

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, every layer, in bf16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gb: float
    bandwidth_tbs: float  # HBM, TB/s
    bf16_tflops: float  # dense peak


GPUS = {
    "h100": Gpu("h100", 80, 3.35, 989),
    "h200": Gpu("h200", 141, 4.8, 989),
    "a100-80": Gpu("a100-80", 80, 2.0, 312),
    "a100-40": Gpu("a100-40", 40, 1.55, 312),
    "l40s": Gpu("l40s", 48, 0.864, 362),
    "l4": Gpu("l4", 24, 0.3, 121),
}

MODELS = {
    "smollm2-135m": ModelShape("smollm2-135m", 0.135, 30, 3, 64),
    "qwen3-8b": ModelShape("qwen3-8b", 8.2, 36, 8, 128),
    "qwen3-14b": ModelShape("qwen3-14b", 14.8, 40, 8, 128),
    "qwen3-32b": ModelShape("qwen3-32b", 32.8, 64, 8, 128),
    "llama-3.3-70b": ModelShape("llama-3.3-70b", 70.6, 80, 8, 128),
    "qwen3-235b-a22b": ModelShape("qwen3-235b-a22b", 235.0, 94, 4, 128, active_params_b=22.0),
}


@dataclass(frozen=True)
class Plan:
    tensor_parallel: int
    replicas: int
    gpus_used: int
    weights_gb_per_gpu: float
    kv_cache_gb_per_replica: float
    max_num_seqs: int
    batch_size: int
    max_concurrent_batches: int
    decode_tokens_per_s_per_replica: float
    sequences: int
    output_tokens: int
    hours: float

    def config_overrides(self, section: str = "label") -> list[str]:
        e = f"{section}.engine"
        values = {"tensor_parallel_size": self.tensor_parallel, "replicas": self.replicas,
                  "batch_size": self.batch_size, "max_concurrent_batches": self.max_concurrent_batches,
                  "max_num_seqs": self.max_num_seqs}  # fmt: skip
        return [f"{e}.{k}={v}" for k, v in values.items()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PlanError(ValueError):
    """The model cannot be served on these GPUs (the message says what would fit)."""


def tensor_parallel(weights_gb: float, usable_gb: float, weight_share: float, max_tp: int = 8) -> int:
    """Smallest power of two <= max_tp with weights_gb / TP <= weight_share x usable_gb.

    >>> tensor_parallel(16.4, 72.0, 0.6), tensor_parallel(65.6, 72.0, 0.6), tensor_parallel(141.2, 72.0, 0.6)
    (1, 2, 4)
    """
    tp = 1
    while tp <= max_tp:
        if weights_gb / tp <= weight_share * usable_gb:
            return tp
        tp *= 2
    raise PlanError(
        f"{weights_gb:.0f} GB of weights do not fit {max_tp} GPUs of {usable_gb:.0f} usable GB at a weight share of "
        f"{weight_share:.0%}: use larger GPUs, a quantized model, or pipeline parallelism across nodes"
    )


def plan(
    model: ModelShape,
    gpu: Gpu,
    gpus: int,
    users: int,
    samples: int = 5,
    prompt_tokens: int = 1500,
    output_tokens: int = 300,
    prefix_share: float = 0.5,
    bytes_per_param: float = 2.0,
    memory_utilization: float = 0.9,
    weight_share: float = 0.6,
    overhead_gb: float = 2.0,
    efficiency: float = 0.5,
    max_seqs: int = 256,
    tokens_per_s: float | None = None,
) -> Plan:
    """The plan for ``users x samples`` sequences; ``tokens_per_s`` (measured decode tokens/s per replica)
    replaces the bandwidth estimate."""
    if min(gpus, users, samples, prompt_tokens, output_tokens) < 1:
        raise PlanError("gpus, users, samples, prompt_tokens and output_tokens must be at least 1")
    usable = gpu.memory_gb * memory_utilization
    weights = model.params_b * bytes_per_param
    tp = tensor_parallel(weights, usable, weight_share)
    if tp > gpus:
        raise PlanError(f"{model.name} needs tensor parallel size {tp} but only {gpus} GPUs were given")
    replicas = gpus // tp
    weights_per_gpu = weights / tp
    kv_gb = tp * (usable - weights_per_gpu - overhead_gb)
    if kv_gb <= 0:
        raise PlanError(f"no memory left for the KV cache on {gpu.name} (weights {weights_per_gpu:.1f} GB per GPU)")
    per_seq_gb = model.kv_bytes_per_token * (prompt_tokens + output_tokens) / 1e9
    seqs = max(1, min(max_seqs, int(kv_gb / per_seq_gb)))
    batch = min(64, seqs)
    concurrent = math.ceil(seqs / batch) + 1  # one batch more than fits, so the engine never waits for rows
    # Decode: a step reads the weight share and every sequence's KV (mean context: prompt + half the output).
    mean_context = prompt_tokens + output_tokens / 2
    step_bytes = weights_per_gpu * 1e9 + seqs * model.kv_bytes_per_token * mean_context / tp
    decode_rate = tokens_per_s or seqs / (step_bytes / (gpu.bandwidth_tbs * 1e12 * efficiency))
    active = model.active_params_b or model.params_b
    prefill_rate = tp * gpu.bf16_tflops * 1e12 * efficiency / (2 * active * 1e9)  # prompt tokens/s per replica
    sequences = users * samples
    per_replica = sequences / replicas
    seconds = per_replica * (output_tokens / decode_rate + prompt_tokens * (1 - prefix_share) / prefill_rate)
    return Plan(
        tensor_parallel=tp,
        replicas=replicas,
        gpus_used=replicas * tp,
        weights_gb_per_gpu=round(weights_per_gpu, 2),
        kv_cache_gb_per_replica=round(kv_gb, 2),
        max_num_seqs=seqs,
        batch_size=batch,
        max_concurrent_batches=concurrent,
        decode_tokens_per_s_per_replica=round(decode_rate, 1),
        sequences=sequences,
        output_tokens=sequences * output_tokens,
        hours=round(seconds / 3600, 2),
    )


BLOCKS_PER_REPLICA = 32  # engine input blocks per replica: see rows_per_block
MAX_ROWS_PER_BLOCK = 4096  # a request row carries its document (a few KB): blocks of at most tens of MB


def rows_per_block(rows: int, batch_size: int, replicas: int) -> int:
    """The rows of each block a labeling or inference job sends to its engines: ``rows`` split into about
    ``BLOCKS_PER_REPLICA`` blocks per replica, none smaller than one engine batch nor (unless a batch is)
    larger than ``MAX_ROWS_PER_BLOCK``. A block is the unit of the engines' work and output: its rows come
    out (are counted by the progress line and written) when the whole block is done, and a replica keeps
    a few blocks in flight. Blocks of about 60 users kept a 15-minute labeling's progress line at 0,
    then 60 of 296 users until its end; few blocks also leave replicas idle where there are more replicas
    than blocks, and end in a tail where one block runs alone at a fraction of the engine's sequences in
    flight, which 32 blocks per replica bound to about 1/32 of the work.

    >>> rows_per_block(888, 16, 1), rows_per_block(100, 16, 1), rows_per_block(4_000_000, 64, 8)
    (28, 16, 4096)
    """
    if min(batch_size, replicas) < 1:
        raise ValueError(f"batch_size={batch_size}, replicas={replicas}: both must be >= 1")
    share = -(-max(rows, 0) // (replicas * BLOCKS_PER_REPLICA))
    return max(batch_size, min(MAX_ROWS_PER_BLOCK, share))
