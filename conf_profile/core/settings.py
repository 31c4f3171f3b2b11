"""The typed configuration of every job: one dataclass section per stage.

A YAML config file has the same shape (``data: {users: 300}``); ``--set data.users=300`` overrides one key.
Later stages add their sections here. Each section's ``validate()`` raises ``ValueError`` naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaxonomyConfig:
    path: str | None = None  # YAML file; None = the default six-dimension taxonomy shipped with the package


@dataclass
class DataConfig:
    """The built-in synthetic data set (``jobs.make_logs``, and the demo's input)."""

    users: int = 300
    seed: int = 0
    bad_fraction: float = 0.02
    files: int = 4

    def validate(self) -> None:
        if self.users < 1:
            raise ValueError(f"users={self.users}: must be at least 1")
        if not 0.0 <= self.bad_fraction < 1.0:
            raise ValueError(f"bad_fraction={self.bad_fraction}: must be in [0, 1), e.g. 0.02")
        if not 1 <= self.files <= 4096:
            raise ValueError(f"files={self.files}: must be between 1 and 4096")


@dataclass
class ModelsConfig:
    """Where the embedded models are prepared, and which model each role uses."""

    cache_dir: str | None = None  # None = $CONF_PROFILE_CACHE or ~/.cache/conf-profile
    teacher: str = "demo"  # "demo" (SmolLM2-135M-Instruct), "tiny" (test model) or a model folder / hub id
    student: str = "demo"


@dataclass
class RunConfig:
    runs_root: str = "runs"  # where new run directories are created (runs/<run_id>/, runs/latest)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    taxonomy: TaxonomyConfig = field(default_factory=TaxonomyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
