"""Blend weights of overlapping refine cores (a partition of unity across each overlap)."""

from __future__ import annotations

import numpy as np

from .layout import Tile


def ramp_weights(tile: Tile) -> np.ndarray:
    """Blend weights over the core (core.h, core.w): raised-cosine ramps where cores overlap,
    complementary between neighbours so that the weights of overlapping cores sum to one."""
    top, bottom, left, right = tile.ramps

    def axis(n: int, lo: int, hi: int) -> np.ndarray:
        wgt = np.ones(n, np.float32)
        if lo:
            d = np.arange(min(lo, n), dtype=np.float64)
            wgt[: len(d)] *= (0.5 - 0.5 * np.cos(np.pi * (d + 0.5) / lo)).astype(np.float32)
        if hi:
            d = np.arange(min(hi, n), dtype=np.float64)[::-1]
            wgt[n - len(d) :] *= (0.5 - 0.5 * np.cos(np.pi * (d + 0.5) / hi)).astype(np.float32)
        return wgt

    return axis(tile.core.h, top, bottom)[:, None] * axis(tile.core.w, left, right)[None, :]
