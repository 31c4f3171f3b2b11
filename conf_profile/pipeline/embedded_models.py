"""Stage: prepare the teacher and student models and check the teacher answers a chat prompt on vLLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config

CHECK_PROMPT = "In one sentence: what can a person's watched videos tell about their occupation?"


def resolve_model(name: str, cache_dir: str | None) -> Path:
    """``demo`` and ``tiny`` are the embedded models (prepared on first use); anything else is a folder."""
    from conf_profile import models

    if name == "demo":
        return models.prepare_demo_model(cache_dir)
    if name == "tiny":
        return models.tiny_model_dir(cache_dir)
    path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {name!r}: not 'demo', 'tiny' or a model folder with config.json")
    return path


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile import models

    started = time.monotonic()
    teacher = resolve_model(cfg.models.teacher, cfg.models.cache_dir)
    student = resolve_model(cfg.models.student, cfg.models.cache_dir)
    prepared = time.monotonic()
    [answer] = models.chat_with_vllm(teacher, [[{"role": "user", "content": CHECK_PROMPT}]], max_tokens=48)
    if not answer.strip():
        raise RuntimeError(f"the teacher model at {teacher} returned an empty answer on vLLM")
    return {
        "teacher": str(teacher),
        "student": str(student),
        "prepare_seconds": round(prepared - started, 1),
        "vllm_check_seconds": round(time.monotonic() - prepared, 1),
        "vllm_check_prompt": CHECK_PROMPT,
        "vllm_check_answer": answer.strip(),
    }
