"""Engine settings that depend on the hardware: which dtype an engine computes in.

bf16 is fast on CPUs with AVX-512 BF16 or AMX; on AVX2-only CPUs vLLM falls back to slow kernels in bf16
(the demo's labeling ran about 10x slower there), so ``auto`` serves fp32 on such CPUs. On GPU, ``auto`` is
vLLM's own ``auto``: the checkpoint's dtype (bf16 for the bundled models), which vLLM maps to what the card
supports. The CPU flags are read where the job's driver runs; on a cluster whose CPU nodes differ, set the
dtype explicitly.

>>> engine_dtype("auto", "cpu", {"avx2", "avx512f", "avx512_bf16"}), engine_dtype("auto", "cpu", {"avx2"})
('bfloat16', 'float32')
"""

from __future__ import annotations

from pathlib import Path

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # either makes bf16 matmuls fast on CPU
DTYPES = ("auto", "bfloat16", "float16", "float32")


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
