"""The pipeline's stages, one module each, in data-flow order (see docs/architecture.md)."""
