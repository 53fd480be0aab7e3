"""Low-resolution passes: mask-aware downscaling and the bilinearly sampled coarse fill."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .layout import Rect


@dataclass
class CoarseFill:
    """A low-resolution prediction ``image`` (3, h, w) of the pixel rectangle ``rect``; sampled
    bilinearly (half-pixel centres, as cv2.resize / torch align_corners=False) on demand."""

    rect: Rect
    image: np.ndarray

    def sample(self, win: Rect) -> np.ndarray:
        """(3, win.h, win.w) float32 upsampled values over ``win`` (edge-clamped outside rect)."""
        src = self.image
        y0, y1, fy = _lerp_axis(win.y0, win.y1, self.rect.y0, self.rect.h, src.shape[1])
        x0, x1, fx = _lerp_axis(win.x0, win.x1, self.rect.x0, self.rect.w, src.shape[2])
        rows = src[:, y0, :] * (1 - fy)[None, :, None] + src[:, y1, :] * fy[None, :, None]
        return (rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx).astype(np.float32, copy=False)


def _lerp_axis(
    a: int, b: int, origin: int, full: int, small: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights sampling pixels [a, b) of a ``full``-px axis starting at
    ``origin`` from its ``small``-px version."""
    pos = (np.arange(a, b, dtype=np.float64) - origin + 0.5) * (small / full) - 0.5
    pos = np.clip(pos, 0, small - 1)
    i0 = np.floor(pos).astype(np.intp)
    return i0, np.minimum(i0 + 1, small - 1), (pos - i0).astype(np.float32)


COARSE_RULES = ("any", "majority", "known")
COARSE_RULE = "known"  # chosen by measurement: benchmarks/results/pipeline-quality.md


def downscale(
    image: np.ndarray, mask: np.ndarray, rect: Rect, size: tuple[int, int], rule: str = COARSE_RULE
) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale image (3,H,W) and mask (H,W) over ``rect`` to ``size`` = (h, w).

    A low-res pixel averages a cell of hole fraction f. ``rule`` says which become holes:
    ``"any"`` f > 0 (hides everything under fine masks: 1024 -> 256 turns Nearest-Neighbour masks
    into 100% hole), ``"majority"`` f > 0.5, ``"known"`` f = 1. Known low-res pixels of the latter
    two hold the average of the cell's *known* pixels only (normalized convolution), so no hole
    content ever leaks in.
    """
    if rule not in COARSE_RULES:
        raise ValueError(f"rule must be one of {COARSE_RULES}, got {rule!r}")
    hs, ws = size
    sl = rect.slices()

    def area(a: np.ndarray) -> np.ndarray:
        return cv2.resize(np.ascontiguousarray(a, dtype=np.float32), (ws, hs), interpolation=cv2.INTER_AREA)

    frac = area(mask[sl] > 0.5)
    img = np.empty((1, 3, hs, ws), np.float32)
    if rule == "any":
        for c in range(3):
            img[0, c] = area(image[c][sl])
        return img, (frac > 0)[None, None].astype(np.float32)
    known = (mask[sl] <= 0.5).astype(np.float32)
    kfrac = 1.0 - frac
    safe = np.maximum(kfrac, 1e-6)
    for c in range(3):
        img[0, c] = np.where(kfrac > 1e-6, area(image[c][sl] * known) / safe, 0.0)
    hole = frac > 0.5 if rule == "majority" else kfrac <= 1e-6
    return img, hole[None, None].astype(np.float32)
