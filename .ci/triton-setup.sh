#!/usr/bin/env bash
# Build the Triton server environment (.triton-env, or $GLAMA_TRITON_ENV) if it is missing or stale.
# Idempotent: a second run only checks it (~2 s). Needs nothing but a Python 3 with venv + pip:
# glama_deploy.triton's setup-env uses the standard library only.
#   nvidia-pytriton (tritonserver 2.5x, python backend), numpy<2, onnxruntime,
#   opencv-python-headless<4.11, tqdm; never torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m glama_deploy.triton setup-env --quiet "$@"
