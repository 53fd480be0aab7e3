"""Engines behind one protocol: ``engine(image, mask) -> image`` (see :mod:`.base`)."""

from __future__ import annotations

from .base import BaseEngine, Engine, EngineError

ENGINES = ("torch", "onnxruntime", "tensorrt", "triton")


def create_engine(kind: str, weights: str | None = None, device: str = "cpu", threads: int | None = None,
                  **kwargs) -> Engine:
    """Build an engine by name. ``weights``: safetensors/ckpt (torch), .onnx (onnxruntime),
    .plan (tensorrt); triton takes ``url`` and ``model_name`` in kwargs."""
    if kind == "torch":
        from .torch_ import TorchEngine

        return TorchEngine(weights, device=device, threads=threads, **kwargs)
    if kind == "onnxruntime":
        from .onnx_ import OnnxEngine

        return OnnxEngine(weights, device=device, threads=threads, **kwargs)
    if kind == "tensorrt":
        from .tensorrt_ import TensorRTEngine

        return TensorRTEngine(weights, device=0 if device in ("cpu", "cuda") else device, **kwargs)
    if kind == "triton":
        from .triton_ import TritonEngine

        return TritonEngine(**kwargs)
    raise ValueError(f"unknown engine {kind!r}; choose one of {ENGINES}")


__all__ = ["BaseEngine", "Engine", "EngineError", "ENGINES", "create_engine"]
