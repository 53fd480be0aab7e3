"""Eager PyTorch engine (the reference every other engine is checked against)."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

from ..model import Generator
from ..model.weights import load_generator
from .base import BaseEngine, EngineError

PRECISIONS = ("fp32", "bf16")


def _fp32_forward(forward):
    """Run a module in fp32 with autocast off (FourierUnit: a spectrum sums every pixel, beyond
    bf16's 8-bit mantissa; PyramidFill: its mean colour likewise)."""

    @functools.wraps(forward)
    def run(*xs: torch.Tensor) -> torch.Tensor:
        with torch.autocast(xs[0].device.type, enabled=False):
            return forward(*(x.float() for x in xs))

    return run


class TorchEngine(BaseEngine):
    name = "torch"

    def __init__(self, model: Generator | str, device: str = "cpu", spectral_backend: str = "fft",
                 threads: int | None = None, precision: str = "fp32"):
        """``precision="bf16"``: torch autocast to bfloat16 (CPU: oneDNN, fast with AVX512_BF16 or
        AMX), the FourierUnits and the prefill pyramid kept in fp32 as in the fp16 TensorRT export;
        the output is float32."""
        if precision not in PRECISIONS:
            raise EngineError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, Generator):
            self.model, self.metadata = model, {}
        else:
            self.model, self.metadata = load_generator(model, device=device)
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval().set_spectral_backend(spectral_backend)
        self.multiple = self.model.multiple
        self.precision = precision
        if precision == "bf16":
            from ..model.ffc import FourierUnit
            from ..model.prefill import PyramidFill

            for m in self.model.modules():
                if isinstance(m, FourierUnit | PyramidFill):
                    m.forward = _fp32_forward(m.forward)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        img = torch.from_numpy(image).to(self.device)
        msk = torch.from_numpy(mask).to(self.device)
        with self._autocast():
            out = self.model(img, msk)
        return out.float().cpu().numpy()

    def describe(self) -> dict:
        return {"engine": self.name, "device": str(self.device), "config": self.model.config.name,
                "spectral_backend": self.model.spectral_backend, "precision": self.precision}
