#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU (see benchmarks/gpu_check.py for the steps):
#   benchmarks/gpu_check.sh [--out reports/gpu_check] [--no-install] [--models bundled,lama-fourier]
# Writes OUT/gpu_check.json with latencies, PSNR against fp32 and every failure. On a machine without
# a GPU it prepares the models, then stops at the GPU probe and says why.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m benchmarks.gpu_check "$@"
