"""Engine dtype resolution for simulated machines: bf16 only where the CPU has bf16 kernels."""

from __future__ import annotations

import pytest

from conf_profile.core.config import build
from conf_profile.core.hardware import cpu_flags, engine_dtype
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
