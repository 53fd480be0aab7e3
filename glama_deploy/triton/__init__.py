"""Triton Inference Server support: model repository writer, server runner, server environment.

``python -m glama_deploy.triton build-repo | serve | setup-env`` (see :mod:`.__main__`).
The client side is :class:`glama_deploy.engines.triton_.TritonEngine`.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding glama_deploy/
GENERATOR_MODELS = ("glama_onnx", "glama_trt", "glama_onnx_py")
PIPELINE_MODEL = "glama_pipeline"

__all__ = ["GENERATOR_MODELS", "PACKAGE_ROOT", "PIPELINE_MODEL"]
