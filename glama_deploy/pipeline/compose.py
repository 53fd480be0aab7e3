"""Padding to the network's stride and compositing of known pixels (NCHW float arrays)."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(x: np.ndarray, multiple: int = 8, mode: str = "symmetric", min_size: int = 1) -> np.ndarray:
    """Pad H and W at the bottom/right to a multiple of ``multiple`` (LaMa uses 'symmetric') and to at
    least ``min_size`` (a side of 8 px becomes 16 for an 8x-downsampling network)."""
    h, w = x.shape[-2:]
    ph, pw = max(h, min_size) - h, max(w, min_size) - w
    ph, pw = ph + (-(h + ph)) % multiple, pw + (-(w + pw)) % multiple
    if ph == 0 and pw == 0:
        return x
    pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(x, pad, mode=mode)


def composite(image: np.ndarray, mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Known pixels from ``image`` (bit-exact), holes from ``pred``; mask is 1 in holes."""
    hole = mask > 0.5
    return np.where(hole, pred, image).astype(np.float32, copy=False)
