"""Stage: prepare the teacher and student models and check the teacher answers a chat prompt on vLLM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config

CHECK_PROMPT = "In one sentence: what can a person's watched videos tell about their occupation?"


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile import models

    started = time.monotonic()
    teacher = models.resolve_model(cfg.models.teacher, cfg.models.cache_dir)
    student = models.resolve_model(cfg.models.student, cfg.models.cache_dir)
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
