"""The pipeline stages, in data-flow order. Each stage is ``run(cfg, run_dir) -> dict`` (its manifest entry)."""
