"""The pure core and the synthetic data generator import nothing heavy (docs/architecture.md 2)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import conf_profile.core

HEAVY = ("ray", "torch", "vllm", "transformers", "trl", "deepspeed")


def test_core_modules_do_not_load_heavy_packages() -> None:
    modules = [f"conf_profile.core.{m.name}" for m in pkgutil.iter_modules(conf_profile.core.__path__)]
    assert "conf_profile.core.taxonomy" in modules and "conf_profile.core.config" in modules
    modules += ["conf_profile.synthetic.dataset", "conf_profile.cli", "conf_profile.storage"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(','.join(sorted(h for h in {HEAVY!r} if h in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy packages loaded by the core: {out.stdout.strip()}"


def test_the_check_detects_a_heavy_import() -> None:
    """The probe above would notice: importing torch does show up in sys.modules."""
    code = "import sys, torch\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
