"""The sizing planner's arithmetic, checked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conf_profile.core.plan import (
    BLOCKS_PER_REPLICA,
    GPUS,
    MAX_ROWS_PER_BLOCK,
    MODELS,
    Gpu,
    ModelShape,
    PlanError,
    plan,
    rows_per_block,
    tensor_parallel,
)

ROOT = Path(__file__).resolve().parents[1]
GPU = Gpu("g", memory_gb=100, bandwidth_tbs=2.0, bf16_tflops=1000)  # usable memory at 0.9: 90 GB


def test_kv_bytes_per_token_is_k_and_v_for_every_layer_in_bf16() -> None:
    assert ModelShape("m", 8.0, layers=36, kv_heads=8, head_dim=128).kv_bytes_per_token == 2 * 36 * 8 * 128 * 2


def test_tensor_parallel_is_the_smallest_power_of_two_that_fits() -> None:
    assert tensor_parallel(54.0, 90.0, 0.6) == 1  # 54 <= 0.6 x 90
    assert tensor_parallel(54.1, 90.0, 0.6) == 2
    assert tensor_parallel(400.0, 90.0, 0.6) == 8  # 50 per GPU
    with pytest.raises(PlanError, match="do not fit 8 GPUs"):
        tensor_parallel(433.0, 90.0, 0.6)


def test_plan_arithmetic() -> None:
    model = ModelShape("m", params_b=10.0, layers=10, kv_heads=4, head_dim=100)  # 16,000 B of KV per token
    p = plan(model, GPU, gpus=6, users=1000, samples=2, prompt_tokens=900, output_tokens=100, prefix_share=0.5,
             overhead_gb=2.0, efficiency=0.5)  # fmt: skip
    assert (p.tensor_parallel, p.replicas, p.gpus_used, p.weights_gb_per_gpu) == (1, 6, 6, 20.0)  # 20 GB <= 54
    assert p.kv_cache_gb_per_replica == 68.0  # 90 - 20 - 2
    assert p.max_num_seqs == 256  # 68 GB / (16,000 B x 1,000 tokens) = 4,250: capped
    assert (p.batch_size, p.max_concurrent_batches) == (64, 5)  # 256 / 64 + 1
    # decode step: 20e9 + 256 x 16,000 x 950 bytes = 23.8912e9 at 1e12 B/s -> 256 / 0.0238912 tokens/s
    assert p.decode_tokens_per_s_per_replica == round(256 / 0.0238912, 1)
    # per replica: 2000 / 6 sequences x (100 / decode + 450 prompt tokens / (500e12 / 20e9 = 25,000 tokens/s))
    expected = 2000 / 6 * (100 / (256 / 0.0238912) + 450 / 25_000) / 3600
    assert p.hours == round(expected, 2) and p.sequences == 2000 and p.output_tokens == 200_000
    assert p.config_overrides("infer")[:2] == ["infer.engine.tensor_parallel_size=1", "infer.engine.replicas=6"]


def test_a_measured_rate_replaces_the_decode_estimate_and_bad_requests_are_refused() -> None:
    model = MODELS["qwen3-8b"]
    p = plan(model, GPUS["h100"], gpus=1, users=3600, samples=1, output_tokens=100, prefix_share=1.0, tokens_per_s=100)
    assert p.decode_tokens_per_s_per_replica == 100 and p.hours == 1.0  # 3600 x 100 tokens at 100 tokens/s
    with pytest.raises(PlanError, match="needs tensor parallel size 2"):
        plan(MODELS["qwen3-32b"], GPUS["h100"], gpus=1, users=10)
    with pytest.raises(PlanError, match="at least 1"):
        plan(model, GPUS["h100"], gpus=0, users=10)


def test_the_job_prints_the_plan_and_the_overrides(tmp_path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                                  "hidden_size": 4096}))  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "jobs.plan", "--model-config", str(config), "--params-b", "8",
                          "--gpus", "4", "--users", "1e5"], cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "tensor_parallel" in res.stdout and "--set label.engine.replicas=4" in res.stdout
    bad = subprocess.run([sys.executable, "-m", "jobs.plan", "--model", "nope", "--gpus", "1", "--users", "1"],
                         cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "known models are" in bad.stderr


def test_the_plans_overrides_are_real_config_keys_that_reach_the_engine() -> None:
    from conf_profile.core.config import build
    from conf_profile.core.settings import Config
    from conf_profile.engines import processor_config

    p = plan(MODELS["qwen3-32b"], GPUS["h100"], gpus=16, users=1_000_000)
    for section in ("label", "infer"):
        cfg = build(Config, overrides=p.config_overrides(section))
        engine = getattr(cfg, section).engine
        assert (engine.tensor_parallel_size, engine.replicas, engine.batch_size) == (p.tensor_parallel, p.replicas,
                                                                                   p.batch_size)  # fmt: skip
        assert (engine.max_concurrent_batches, engine.max_num_seqs) == (p.max_concurrent_batches, p.max_num_seqs)
        kwargs = processor_config("/m", engine, "gpu").engine_kwargs
        assert kwargs["tensor_parallel_size"] == p.tensor_parallel and kwargs["max_num_seqs"] == p.max_num_seqs


def test_engine_blocks_are_32_per_replica_and_never_smaller_than_one_engine_batch() -> None:
    assert BLOCKS_PER_REPLICA == 32
    assert rows_per_block(888, 16, 1) == 28  # ceil(888 / 32): 32 blocks, the last one 20 rows
    assert rows_per_block(888, 16, 2) == 16  # ceil(888 / 64) = 14 is below one batch of 16
    assert rows_per_block(10, 16, 4) == 16 and rows_per_block(0, 16, 1) == 16  # one batch at least
    assert rows_per_block(400_000, 64, 8) == 1563  # ceil(400,000 / 256): 32 per replica
    assert rows_per_block(4_000_000, 64, 8) == MAX_ROWS_PER_BLOCK == 4096  # blocks of tens of MB at most
    assert rows_per_block(4_000_000, 8192, 1) == 8192  # but never below one engine batch
    with pytest.raises(ValueError, match="must be >= 1"):
        rows_per_block(100, 0, 1)
