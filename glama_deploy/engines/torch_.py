"""Eager PyTorch engine (the reference every other engine is checked against)."""

from __future__ import annotations

import numpy as np
import torch

from ..model import Generator
from ..model.weights import load_generator
from .base import BaseEngine


class TorchEngine(BaseEngine):
    name = "torch"

    def __init__(self, model: Generator | str, device: str = "cpu", spectral_backend: str = "fft",
                 threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, Generator):
            self.model, self.metadata = model, {}
        else:
            self.model, self.metadata = load_generator(model, device=device)
        self.device = torch.device(device)
        self.model = self.model.to(self.device).eval().set_spectral_backend(spectral_backend)
        self.multiple = self.model.multiple

    @torch.inference_mode()
    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        img = torch.from_numpy(image).to(self.device)
        msk = torch.from_numpy(mask).to(self.device)
        return self.model(img, msk).float().cpu().numpy()

    def describe(self) -> dict:
        return {"engine": self.name, "device": str(self.device), "config": self.model.config.name,
                "spectral_backend": self.model.spectral_backend}
