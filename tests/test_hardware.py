"""Engine and trainer dtype resolution for simulated machines: engines serve bf16 only where the CPU has bf16
kernels; trainers train in bf16 on GPU and in fp32 on CPU unless asked."""

from __future__ import annotations

import pytest

from conf_profile.core.config import build
from conf_profile.core.hardware import cpu_flags, engine_dtype, train_dtype
from conf_profile.core.settings import Config

AVX2_EPYC = "processor\t: 0\nmodel name\t: AMD EPYC 7B12\nflags\t\t: fpu sse2 avx avx2 fma\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.mark.parametrize(
    ("cpuinfo", "device", "requested", "expected"),
    [
        (AVX2_EPYC, "cpu", "auto", "float32"),  # AVX2 only: bf16 falls back to slow kernels
        (SAPPHIRE, "cpu", "auto", "bfloat16"),
        ("processor : 0\nflags : avx512f avx512_bf16\n", "cpu", "auto", "bfloat16"),
        ("", "cpu", "auto", "float32"),  # flags unknown (no /proc/cpuinfo): the safe choice
        (AVX2_EPYC, "gpu", "auto", "auto"),  # on GPU vLLM serves the checkpoint's dtype
        (AVX2_EPYC, "cpu", "bfloat16", "bfloat16"),  # an explicit choice is kept
        (SAPPHIRE, "gpu", "float16", "float16"),
    ],
)
def test_engine_dtype(cpuinfo: str, device: str, requested: str, expected: str) -> None:
    assert engine_dtype(requested, device, cpu_flags(cpuinfo)) == expected


def test_a_bad_dtype_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="bfloat16, float16, float32"):
        build(Config, overrides=["label.engine.dtype=bf16"])
    with pytest.raises(ValueError, match="use one of"):
        engine_dtype("half", "cpu", frozenset())
    assert build(Config, overrides=["infer.engine.dtype=float32"]).infer.engine.dtype == "float32"


@pytest.mark.parametrize(
    ("gpu", "requested", "expected"),
    [
        (False, "auto", "float32"),  # CPU: fp32 unless asked (bf16 is faster on AVX-512 BF16 CPUs, see README)
        (True, "auto", "bfloat16"),
        (False, "bfloat16", "bfloat16"),  # an explicit choice is kept
        (True, "float32", "float32"),
    ],
)
def test_train_dtype(gpu: bool, requested: str, expected: str) -> None:
    assert train_dtype(requested, gpu) == expected


def test_a_bad_training_dtype_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of 'auto', 'bfloat16', 'float32'"):
        build(Config, overrides=["train_sft.dtype=float16"])  # float16 would need loss scaling
    with pytest.raises(ValueError, match="use one of"):
        train_dtype("bf16", False)
    assert build(Config, overrides=["train_rl.dtype=float32"]).train_rl.dtype == "float32"


# Simulated clusters: the live nodes' resource dicts as ray.nodes() reports them.
CPU_LAPTOP = [{"CPU": 2.0, "memory": 2e10}]
ONE_GPU = [{"CPU": 16.0, "GPU": 1.0}]
CLUSTER_YAML = [{"CPU": 0.0}, {"CPU": 96.0, "GPU": 8.0, "teacher": 8.0}, {"CPU": 96.0, "GPU": 8.0, "teacher": 8.0},
                {"CPU": 96.0, "GPU": 8.0, "trainer": 8.0}]  # fmt: skip


def _totals(nodes: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in nodes:
        for key, value in node.items():
            out[key] = out.get(key, 0.0) + value
    return out


def test_training_workers_default_to_the_gpus_of_the_trainer_nodes() -> None:
    from conf_profile.core.hardware import train_workers

    assert train_workers(0, False, CPU_LAPTOP) == 2  # CPU: two data-parallel workers, as before
    assert train_workers(0, True, ONE_GPU) == 1  # a 1-GPU node no longer waits forever for a second GPU
    assert train_workers(0, True, CLUSTER_YAML) == 8  # only the gpu_train node's GPUs, not the teachers'
    assert train_workers(0, True, CLUSTER_YAML[:3]) == 16  # no trainer node: every GPU node counts
    assert train_workers(4, True, CLUSTER_YAML) == 4  # an explicit count is kept
    with pytest.raises(ValueError, match="no GPU node is up"):
        train_workers(0, True, [{"CPU": 8.0}])  # autoscaling cluster with no GPU node yet: says what to set


def test_engines_and_trainers_are_pinned_to_their_node_types_when_the_cluster_declares_them() -> None:
    from conf_profile.core.hardware import pinned_resources
    from conf_profile.core.settings import LabelConfig, TeacherConfig
    from conf_profile.engines import processor_config, teacher_engine

    cluster = _totals(CLUSTER_YAML)
    assert pinned_resources({}, cluster, "trainer") == {"trainer": 1.0}
    assert pinned_resources({}, _totals(ONE_GPU), "trainer") == {}  # nothing declared: nothing asked
    engine = teacher_engine(LabelConfig(), TeacherConfig(), cluster)
    bundles = processor_config("/m", engine, "gpu").placement_group_config["bundles"]
    assert bundles == [{"GPU": 1, "CPU": 1, "teacher": 1.0}]
    assert teacher_engine(LabelConfig(), TeacherConfig(), _totals(ONE_GPU)).resources == {}


def test_eager_mode_is_off_on_gpu_and_on_on_cpu_unless_set() -> None:
    from conf_profile.core.hardware import enforce_eager
    from conf_profile.core.settings import EngineConfig
    from conf_profile.engines import processor_config

    assert processor_config("/m", EngineConfig(), "gpu").engine_kwargs["enforce_eager"] is False  # CUDA graphs
    assert processor_config("/m", EngineConfig(), "cpu").engine_kwargs["enforce_eager"] is True
    assert build(Config, overrides=["infer.engine.enforce_eager=true"]).infer.engine.enforce_eager is True
    with pytest.raises(ValueError, match="enforce_eager"):
        build(Config, overrides=["label.engine.enforce_eager=sometimes"])
    with pytest.raises(ValueError, match="auto, true or false"):
        enforce_eager("yes", "gpu")


def test_each_teacher_can_have_its_own_engine_settings() -> None:
    teachers = [{"name": "big", "engine": {"tensor_parallel_size": 4, "max_model_len": 8192}}, {"name": "small"}]
    cfg = build(Config, {"label": {"engine": {"replicas": 2, "max_model_len": 4096}, "teachers": teachers}})
    big, small = (cfg.label.engine_for(t) for t in cfg.label.teachers)
    assert (big.tensor_parallel_size, big.replicas, big.max_model_len) == (4, 2, 8192)
    assert (small.tensor_parallel_size, small.replicas, small.max_model_len) == (1, 2, 4096)
    with pytest.raises(ValueError, match=r"teachers \(big\)\.engine: unknown config key 'tensor_parallel'"):
        build(Config, {"label": {"teachers": [{"name": "big", "engine": {"tensor_parallel": 4}}]}})
    with pytest.raises(ValueError, match="must be >= 1"):
        build(Config, {"label": {"teachers": [{"name": "big", "engine": {"replicas": 0}}]}})


def test_the_training_placement_resolves_workers_and_resources_for_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """raytrain.placement against simulated clusters (a fake of the two ray calls it makes; no Ray starts)."""
    import ray

    from conf_profile import raycluster, raytrain

    monkeypatch.setattr(raycluster, "init_ray", lambda cfg=None, dashboard=False: None)
    for nodes, expected in ((CPU_LAPTOP, (False, 2, {})), (ONE_GPU, (True, 1, {})),
                            (CLUSTER_YAML, (True, 8, {"trainer": 1.0}))):  # fmt: skip
        monkeypatch.setattr(ray, "cluster_resources", lambda nodes=nodes: _totals(nodes))
        monkeypatch.setattr(ray, "nodes", lambda nodes=nodes: [{"Alive": True, "Resources": n} for n in nodes])
        cfg = Config()
        gpu, t = raytrain.placement(cfg, cfg.train_sft)
        assert (gpu, t.workers, t.resources) == expected
        assert t.max_length == cfg.train_sft.max_length  # the stage's own settings ride along
    cfg = build(Config, overrides=["train_rl.workers=3", "train_rl.resources={big_gpu: 1}"])
    gpu, t = raytrain.placement(cfg, cfg.train_rl)
    assert (t.workers, t.resources, t.num_generations) == (3, {"big_gpu": 1.0}, cfg.train_rl.num_generations)
    with pytest.raises(ValueError, match="global_batch_size=8 but"):  # checked once the workers are known
        cfg = build(Config, overrides=["train_sft.global_batch_size=8"])  # 1 x 2 x 2 CPU workers = 4
        raytrain.placement(cfg, cfg.train_sft)


def test_training_reports_to_tensorboard_unless_set_and_mlflow_needs_its_package(tmp_path) -> None:
    import importlib.util
    import shutil

    from conf_profile import raytrain

    cfg = build(Config, overrides=["train_sft.report_to=none"])
    assert Config().train_rl.report_to == "tensorboard" and cfg.train_sft.report_to == "none"
    args = raytrain.trainer_args(cfg.train_sft, {"stage": "train_sft", "gpu": False, "bf16": False, "deepspeed": {}})
    shutil.rmtree(args["output_dir"])  # the scratch folder trainer_args makes for a worker
    assert args["report_to"] == "none"
    with pytest.raises(ValueError, match="report_to"):
        build(Config, overrides=["train_rl.report_to=wandb"])
    if importlib.util.find_spec("mlflow") is None:  # the pinned stack has none: a clear error before any work
        mlflow = build(Config, overrides=["train_sft.report_to=mlflow"]).train_sft
        with pytest.raises(ValueError, match="needs the mlflow package"):
            raytrain.fit("train_sft", lambda c: None, {}, mlflow, tmp_path, False, tmp_path / "out")


# vLLM's CPU random sampler (compiled by inductor) on logits whose every token but a few is masked out, as
# the structured-output grammar masks them; prints how many picks were masked tokens and inductor's ISA.
SAMPLER_CHECK = """
import torch
from torch._inductor import cpu_vec_isa
from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p, compiled_random_sample
torch.manual_seed(0)
masked = total = 0
for step in range(80):
    n = (1, 2, 3, 5, 8, 13, 16, 4)[step % 8]
    logits = torch.randn(n, 49152) * 3
    allowed = torch.rand(n, 49152) > 0.999
    allowed[:, 500] = True
    logits[~allowed] = float("-inf")
    if step % 2:
        logits = apply_top_k_top_p(logits, None, torch.full((n,), 0.95))
    picked = compiled_random_sample(logits)
    masked += int((~allowed[torch.arange(n), picked]).sum())
    total += n
print(masked, total, cpu_vec_isa.pick_vec_isa())
"""


@pytest.mark.slow
def test_cpu_engines_sample_only_tokens_the_grammar_allows_with_avx2_kernels() -> None:
    """An eager CPU engine runs with engine_env's environment; with inductor's AVX2 kernels (forced here,
    as on an AVX2-only CPU) vLLM's compiled sampler picked masked-out tokens (6 of the 520 picks of this check,
    every sampled teacher output in a labeling run); with that environment no pick is masked."""
    import os
    import subprocess
    import sys

    from conf_profile.core.settings import EngineConfig
    from conf_profile.engines import engine_env

    env = {**os.environ, **engine_env(EngineConfig(), "cpu"), "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", SAMPLER_CHECK], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    masked, total, isa = out.stdout.split()[-3:]
    assert isa == "avx2" and int(total) == 520, out.stdout  # the AVX2 kernels were the ones in effect
    assert int(masked) == 0, f"{masked} of {total} sampled tokens were masked out"
