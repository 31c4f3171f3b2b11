# The cluster image: Ray 2.60's CUDA image with the project's GPU stack (vLLM, TRL, DeepSpeed, torch)
# installed into the image's own Python, the interpreter `ray start` runs on every node. cluster.yaml and
# the KubeRay manifests (deploy/kuberay/) run this image.
#   docker build -t ghcr.io/your-org/conf-profile:gpu-2.60.0 .   &&   docker push ghcr.io/your-org/conf-profile:gpu-2.60.0
# The base is pinned: its Ray must equal ray==2.60.0 in pyproject.toml (a test checks both pins).
FROM rayproject/ray:2.60.0-py311-gpu

WORKDIR /home/ray/conf-profile
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users scripts/ scripts/
COPY --chown=ray:users conf_profile/ conf_profile/
COPY --chown=ray:users jobs/ jobs/
# VENV=system: no virtual environment; everything goes into `python` on the image's PATH.
RUN CONF_PROFILE_TARGET=gpu VENV=system PYTHON=python bash scripts/setup.sh \
    && python -c "import conf_profile, ray, vllm, trl, deepspeed; print('image ok', ray.__version__, vllm.__version__)"
