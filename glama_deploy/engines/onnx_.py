"""onnxruntime engine for the exported generator (matmul-DFT graph, dynamic batch/H/W)."""

from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import WeightsError
from .base import BaseEngine, EngineError

log = logging.getLogger(__name__)

PROVIDER_ALIASES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxEngine(BaseEngine):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                 providers: list[str] | None = None, strict_providers: bool = False, memory_arena: bool = True,
                 int8_as_uint8: bool = True):
        """``int8_as_uint8``: an int8 QDQ model (``export.quantize``) on the CPU provider is specialized
        at load (:func:`glama_deploy.engines.qdq_cpu.specialize_for_cpu`: uint8 grids, Relus folded
        into the quantization, padding on int8): onnxruntime's U8S8 convolutions are much faster on
        x86 than S8S8, and a Relu output gets twice the resolution. The file stays as TensorRT needs it."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise EngineError("onnxruntime is not installed (pip install onnxruntime)") from e
        if not os.path.isfile(path):
            raise EngineError(f"{path}: ONNX model not found")
        wanted = providers or PROVIDER_ALIASES.get(device.split(":")[0], ["CPUExecutionProvider"])
        available = ort.get_available_providers()
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # the CPU arena keeps the peak of the largest request for the session's lifetime; a server
        # taking requests of any size turns it off so memory goes back after a big one
        opts.enable_cpu_mem_arena = memory_arena
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if any(k in first for k in ("INVALID_PROTOBUF", "INVALID_GRAPH", "INVALID_ARGUMENT", "Load model")):
                raise WeightsError(f"{path}: not a loadable ONNX model ({first})") from None
            raise EngineError(f"{path}: onnxruntime could not load the model ({first})") from None
        # what the session really got, not what we asked for (onnxruntime-gpu silently falls back)
        self.providers = self.session.get_providers()
        self.quantized = "quantization" in self.session.get_modelmeta().custom_metadata_map
        if self.quantized and int8_as_uint8 and self.providers[0] == "CPUExecutionProvider":
            self._to_uint8(ort, str(path), opts)
        if wanted[0] not in self.providers:
            msg = f"asked for {wanted[0]} but the session runs on {self.providers}"
            if strict_providers:
                raise EngineError(msg)
            log.warning(msg)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name
        self.path = str(path)

    def _to_uint8(self, ort, path: str, opts) -> None:
        try:
            import onnx
        except ImportError:
            log.warning("%s: int8 model runs with int8 activations (slow on x86); pip install onnx to shift "
                        "them to uint8 at load", path)
            return
        from .qdq_cpu import specialize_for_cpu

        model = onnx.load(path)
        if specialize_for_cpu(model)["uint8_grids"]:
            self.session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                                providers=self.providers)

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = dict(zip(self.input_names, (image, mask), strict=True))
        return self.session.run([self.output_name], feeds)[0]

    def describe(self) -> dict:
        return {"engine": self.name, "providers": self.providers, "model": self.path}
