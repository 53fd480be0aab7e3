"""Whole-image, tiled and two-stage inference on top of any Engine."""

from __future__ import annotations

import numpy as np


def run(engine, image: np.ndarray, mask: np.ndarray, mode: str = "full", *, tile: int = 512,
        overlap: int = 64, coarse_size: int = 256, refine_engine=None, progress: bool = False) -> np.ndarray:
    """Inpaint NCHW ``image`` / ``mask`` with ``engine`` in the given mode; returns NCHW float32."""
    if mode == "full":
        return engine(image, mask)
    raise ValueError(f"mode {mode!r} is not available yet")
