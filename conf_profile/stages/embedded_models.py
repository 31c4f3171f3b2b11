"""Stage: resolve the teacher and student models (the embedded ones are built or converted once into the
model cache; a folder or hub id is used as given)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conf_profile.core.settings import Config
from conf_profile.storage import RunTable

READS: tuple[RunTable, ...] = ()
WRITES: tuple[RunTable, ...] = ()  # the model cache (models.cache_dir), shared by runs


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from conf_profile import models

    started = time.monotonic()
    teachers = {t.name: t.model if t.endpoint else str(models.resolve_model(t.model, cfg.models.cache_dir))
                for t in cfg.label.teachers}  # fmt: skip
    student = models.resolve_model(cfg.models.student, cfg.models.cache_dir)
    return {"teachers": teachers, "student": str(student), "prepare_seconds": round(time.monotonic() - started, 1)}
