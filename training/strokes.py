"""LaMa's irregular strokes and boxes: parameters per resolution and the two drawing functions.

The thin / medium / thick NTIRE 2022 types and LaMa's training masks (``training.masks``) draw with
these. Counts and sides follow LaMa's generator classes exactly (see :func:`draw_irregular`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class StrokeParams:
    """LaMa irregular-stroke + box parameters (pixel lengths at one resolution).

    A draw is boxes with probability ``box_prob`` (LaMa's MixedMaskGenerator weights irregular 1 and
    box 0.3 -> 0.3/1.3), otherwise irregular strokes.
    """

    min_times: int
    max_times: int
    max_width: int
    max_len: int
    max_angle: int = 4
    base_width: int = 5  # width = base_width + randint(max_width)
    base_len: int = 10  # length = base_len + randint(max_len)
    box_prob: float = 0.0
    box_margin: int = 0
    box_min: int = 1
    box_max: int = 2
    box_min_times: int = 1
    box_max_times: int = 1


_LENGTHS = ("max_width", "max_len", "base_width", "base_len", "box_margin", "box_min", "box_max")
_COUNTS = ("min_times", "max_times", "box_min_times", "box_max_times")
_BOX = 0.3 / 1.3

STROKE_PRESETS: dict[str, dict[int, StrokeParams]] = {
    "thin": {256: StrokeParams(4, 50, 10, 40), 512: StrokeParams(4, 70, 20, 100)},
    "medium": {
        256: StrokeParams(4, 5, 50, 100, box_prob=_BOX, box_margin=0, box_min=10, box_max=50,
                          box_min_times=1, box_max_times=5),
        512: StrokeParams(4, 10, 100, 200, box_prob=_BOX, box_margin=0, box_min=30, box_max=150,
                          box_min_times=1, box_max_times=5),
    },
    "thick": {
        256: StrokeParams(1, 5, 100, 200, box_prob=_BOX, box_margin=10, box_min=30, box_max=150,
                          box_min_times=1, box_max_times=3),
        512: StrokeParams(1, 5, 250, 450, box_prob=_BOX, box_margin=10, box_min=30, box_max=300,
                          box_min_times=1, box_max_times=4),
    },
    # LaMa training masks (abl-04-256-mh-dist): irregular or boxes, 50/50 -> two types.
    "lama_irregular": {256: StrokeParams(1, 5, 100, 200)},
    "lama_box": {256: StrokeParams(0, 0, 1, 1, box_prob=1.0, box_margin=10, box_min=30, box_max=150,
                                   box_min_times=1, box_max_times=4)},
}


def stroke_params(kind: str, size: int) -> StrokeParams:
    """Parameters of stroke preset ``kind`` for a mask whose short side is ``size`` (module doc)."""
    presets = STROKE_PRESETS[kind]
    lo, hi = min(presets), max(presets)
    if size <= lo or size >= hi:
        ref = lo if size <= lo else hi
        base, f = presets[ref], size / ref
        vals = {k: getattr(base, k) * (f if k in _LENGTHS else 1.0) for k in _LENGTHS + _COUNTS}
    else:
        t = (size - lo) / (hi - lo)
        a, b = presets[lo], presets[hi]
        vals = {k: getattr(a, k) + t * (getattr(b, k) - getattr(a, k)) for k in _LENGTHS + _COUNTS}
    out = {k: int(round(v)) for k, v in vals.items()}
    for k in ("max_width", "max_len", "base_width", "box_min"):
        out[k] = max(out[k], 1)
    out["box_max"] = max(out["box_max"], out["box_min"] + 1)
    return dataclasses.replace(presets[lo], **out)


def draw_irregular(h: int, w: int, rng: np.random.Generator, p: StrokeParams) -> np.ndarray:
    """LaMa's irregular strokes (uint8 {0,1}): polylines of 1-5 thick segments drawn with cv2.line.

    The number of strokes runs from ``min_times`` to ``max_times + 1`` inclusive, as in LaMa and the
    NTIRE 2022 masks: their generator class passes ``min_times + 1 + (max_times - min_times) * coef``
    on as the maximum (coef 1 at evaluation) and ``make_random_irregular_mask`` then draws
    ``randint(min_times, max_times + 1)``.
    """
    m = np.zeros((h, w), np.uint8)
    for i in range(int(rng.integers(p.min_times, p.max_times + 2))):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        for _ in range(1 + int(rng.integers(5))):
            angle = 0.01 + int(rng.integers(p.max_angle))
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            length = p.base_len + int(rng.integers(p.max_len))
            width = p.base_width + int(rng.integers(p.max_width))
            ex = int(min(max(int(x + length * math.sin(angle)), 0), w))
            ey = int(min(max(int(y + length * math.cos(angle)), 0), h))
            cv2.line(m, (x, y), (ex, ey), 1, width)
            x, y = ex, ey
    return m


def draw_boxes(h: int, w: int, rng: np.random.Generator, p: StrokeParams) -> np.ndarray:
    """LaMa's random rectangles (uint8 {0,1}) within a margin; sides run from ``box_min`` to
    ``box_max`` inclusive (LaMa's class passes ``bbox_min + 1 + (bbox_max - bbox_min) * coef`` as
    the exclusive maximum of ``randint``), capped by the image less the margins."""
    margin = p.box_margin if min(h, w) - 2 * p.box_margin >= 2 else 0
    hi = min(p.box_max + 1, h - 2 * margin, w - 2 * margin)
    lo = max(1, min(p.box_min, hi - 1))
    m = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(p.box_min_times, p.box_max_times + 1))):
        bw, bh = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
        x = int(rng.integers(margin, w - margin - bw + 1))
        y = int(rng.integers(margin, h - margin - bh + 1))
        m[y:y + bh, x:x + bw] = 1
    return m
