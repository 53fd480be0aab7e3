"""Triton python-backend model: the exported GLaMa generator (model.onnx) run by onnxruntime.

The CPU stand-in for ``glama_onnx`` (platform onnxruntime_onnx) where Triton's onnxruntime backend
is not installed: same tensors (``image`` N,3,H,W and ``mask`` N,1,H,W FP32 -> ``output``, the raw
prediction; H and W multiples of 8), same dynamic batching. Requests of one shape that the dynamic
batcher hands over together run as one onnxruntime batch.

Written into the repository by ``python -m glama_deploy.triton build-repo``; needs numpy,
onnxruntime and glama_deploy (no torch) in the server's Python environment.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _params(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _give_back_memory() -> None:
    """Return freed heap pages to the OS after a big request (glibc keeps them otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _error(msg: str):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(msg, pb_utils.TritonError.INVALID_ARG))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = _params(config)
        extra = params.get("glama_deploy_path", "")
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
        from glama_deploy.engines.base import value_problem
        from glama_deploy.engines.onnx_ import OnnxEngine

        self.value_problem = value_problem

        path = os.path.join(args["model_repository"], args["model_version"],
                            params.get("model_filename") or "model.onnx")
        threads = int(params.get("intra_op_thread_count") or 0) or None
        device = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
        arena = (params.get("cpu_memory_arena") or "false").lower() == "true"
        self.engine = OnnxEngine(path, device=device, threads=threads, memory_arena=arena)
        self.trim_pixels = int(params.get("trim_after_pixels") or 1024 * 1024)
        self.max_side = int(params.get("max_side") or 4096)
        self.max_pixels = int(params.get("max_pixels") or 4096 * 4096)  # batch x H x W of one request
        self.multiple, self.min_side = self.engine.multiple, self.engine.min_side
        self.name = args["model_name"]

    def _check(self, image: np.ndarray, mask: np.ndarray) -> str | None:
        n, _, h, w = image.shape
        if mask.shape != (n, 1, h, w):
            return f"mask shape {list(mask.shape)} does not match image shape {list(image.shape)} (want [N,1,H,W])"
        if n == 0 or h == 0 or w == 0:
            return f"empty input {list(image.shape)}"
        if h % self.multiple or w % self.multiple:
            return (f"H and W must be multiples of {self.multiple} (got {h}x{w}); pad the image "
                    f"(glama_pipeline and TritonEngine do it for you)")
        if max(h, w) > self.max_side:
            return f"{h}x{w} exceeds this model's max side {self.max_side} (use glama_pipeline in tiled mode)"
        if min(h, w) < self.min_side:
            return (f"H and W must be at least {self.min_side} (got {h}x{w}); pad the image "
                    f"(glama_pipeline takes any size)")
        if n * h * w > self.max_pixels:
            return (f"{n}x{h}x{w} = {n * h * w} pixels exceeds this model's budget of {self.max_pixels} "
                    f"pixels per request (send fewer or smaller images, or glama_pipeline in tiled mode)")
        return self.value_problem(image, mask)

    def execute(self, requests: list) -> list:
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "mask").as_numpy()
            problem = self._check(image, mask)
            if problem:
                responses[i] = _error(f"{self.name}: {problem}")
            else:
                groups.setdefault(image.shape[1:], []).append((i, image, mask))
        for items in groups.values():  # one onnxruntime run per shape
            try:
                image = np.concatenate([it[1] for it in items]) if len(items) > 1 else items[0][1]
                mask = np.concatenate([it[2] for it in items]) if len(items) > 1 else items[0][2]
                # the raw generator, exactly as the onnxruntime backend would run model.onnx
                pred = np.ascontiguousarray(self.engine._run(image, mask), dtype=np.float32)
            except Exception as e:  # onnxruntime errors become per-request errors, the server stays up
                for i, _, _ in items:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {e}"))
                continue
            if image.shape[0] * image.shape[2] * image.shape[3] >= self.trim_pixels:
                del image, mask
                _give_back_memory()
            start = 0
            for i, img, _ in items:
                n = img.shape[0]
                out = pb_utils.Tensor("output", pred[start:start + n])
                responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                start += n
        return responses

    def finalize(self) -> None:
        self.engine = None
