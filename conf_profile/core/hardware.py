"""Settings that depend on the hardware: an engine's and a trainer's dtype, eager mode, the training workers
and the custom resources that pin engines and trainers to their node types.

bf16 is fast on CPUs with AVX-512 BF16 or AMX; on AVX2-only CPUs vLLM falls back to slow kernels in bf16
(the demo's labeling ran about 10x slower there), so ``auto`` serves fp32 on such CPUs. On GPU, ``auto`` is
vLLM's own ``auto``: the checkpoint's dtype (bf16 for the bundled models), which vLLM maps to what the card
supports. The CPU flags are read where the job's driver runs; on a cluster whose CPU nodes differ, set the
dtype explicitly.

>>> engine_dtype("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"}), engine_dtype("auto", "cpu", {"avx2"})
('bfloat16', 'float32')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # either makes bf16 matmuls fast on CPU
DTYPES = ("auto", "bfloat16", "float16", "float32")
TRAIN_DTYPES = ("auto", "bfloat16", "float32")  # float16 would need loss scaling; bf16 does not
# The custom resources the node types of cluster.yaml declare (one unit per GPU): a stage that finds its
# resource on the cluster asks one unit per engine bundle or training worker, and so lands on those nodes.
TEACHER_RESOURCE = "teacher"
TRAINER_RESOURCE = "trainer"
CPU_TRAIN_WORKERS = 2  # data-parallel workers on CPU when train_*.workers is 0 (auto)


def engine_dtype(requested: str, device: str, cpu_flags: set[str] | frozenset[str]) -> str:
    """The dtype to hand vLLM: ``requested`` unless it is ``auto``; on CPU bf16 only with a bf16 flag.

    >>> engine_dtype("float16", "gpu", set()), engine_dtype("auto", "gpu", set())
    ('float16', 'auto')
    """
    if requested not in DTYPES:
        raise ValueError(f"dtype={requested!r}: use one of {', '.join(DTYPES)}")
    if requested != "auto":
        return requested
    if device == "gpu":
        return "auto"
    return "bfloat16" if any(f in cpu_flags for f in BF16_CPU_FLAGS) else "float32"


def train_dtype(requested: str, gpu: bool) -> str:
    """The dtype a training stage's workers compute in: ``requested`` unless it is ``auto``; ``auto`` is bf16
    on GPU and fp32 on CPU. bf16 on a CPU with AVX-512 BF16 trains faster (SFT of the demo model on 2 cores:
    146 s of training against 224 s for 4 steps; 1.9x on AMX) but is not the CPU default: redone in bf16 on
    the same teacher labels, the MovieLens benchmark's students lost F1 beyond the intervals and a quarter
    of their answers (README, "Training precision").

    >>> train_dtype("auto", True), train_dtype("auto", False), train_dtype("bfloat16", False)
    ('bfloat16', 'float32', 'bfloat16')
    """
    if requested not in TRAIN_DTYPES:
        raise ValueError(f"dtype={requested!r}: use one of {', '.join(TRAIN_DTYPES)}")
    if requested != "auto":
        return requested
    return "bfloat16" if gpu else "float32"


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The flags of this machine's first CPU (from /proc/cpuinfo, or the text given); empty if unknown.

    >>> sorted(cpu_flags("processor : 0\\nflags : fpu avx2 avx512_bf16\\n"))
    ['avx2', 'avx512_bf16', 'fpu']
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def enforce_eager(requested: bool | str, device: str) -> bool:
    """vLLM's enforce_eager: ``auto`` is eager on CPU (torch.compile costs about a minute of start-up there
    for ~15% speed) and CUDA graphs on GPU (eager decodes several times slower there).

    >>> enforce_eager("auto", "cpu"), enforce_eager("auto", "gpu"), enforce_eager(True, "gpu")
    (True, False, True)
    """
    if requested == "auto":
        return device != "gpu"
    if not isinstance(requested, bool):
        raise ValueError(f"enforce_eager={requested!r}: use auto, true or false")
    return requested


def train_workers(
    requested: int, gpu: bool, nodes: Sequence[Mapping[str, float]], resource: str = TRAINER_RESOURCE
) -> int:
    """Ray Train workers: ``requested`` when set (> 0); ``0`` (auto) is, on GPU, the GPUs of the live nodes
    that declare ``resource`` (of every GPU node when none does), and on CPU ``CPU_TRAIN_WORKERS``.
    ``nodes`` are the live nodes' resource dicts (``ray.nodes()[i]["Resources"]``).

    >>> nodes = [{"CPU": 8}, {"CPU": 96, "GPU": 8, "teacher": 8}, {"CPU": 96, "GPU": 8, "trainer": 8}]
    >>> train_workers(0, True, nodes), train_workers(0, True, nodes[:2]), train_workers(3, True, nodes)
    (8, 8, 3)
    """
    if requested < 0:
        raise ValueError(f"workers={requested}: must be >= 0 (0 = auto)")
    if requested:
        return requested
    if not gpu:
        return CPU_TRAIN_WORKERS
    pinned = [n for n in nodes if n.get(resource, 0) > 0]
    gpus = int(sum(n.get("GPU", 0) for n in (pinned or nodes)))
    if gpus < 1:
        raise ValueError("workers=0 (auto) counts the GPUs of the trainer nodes, but no GPU node is up (on an "
                         "autoscaling cluster whose GPU nodes start on demand, set train_sft.workers and "
                         "train_rl.workers to the GPUs to use)")  # fmt: skip
    return gpus


def pinned_resources(configured: Mapping[str, float], cluster: Mapping[str, float], resource: str) -> dict[str, float]:
    """The custom resources one engine bundle or training worker asks for: ``configured`` when any are set;
    else one unit of ``resource`` when the cluster declares it (the node types of cluster.yaml); else none.

    >>> pinned_resources({}, {"CPU": 8, "trainer": 8}, "trainer"), pinned_resources({}, {"CPU": 8}, "trainer")
    ({'trainer': 1.0}, {})
    >>> pinned_resources({"big": 1.0}, {"trainer": 8}, "trainer")
    {'big': 1.0}
    """
    if configured:
        return dict(configured)
    return {resource: 1.0} if cluster.get(resource, 0) > 0 else {}
