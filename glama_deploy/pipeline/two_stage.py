"""Two-stage inference (GLaMa section 4.5): a coarse pass at low resolution, then a refine pass.

1. **Coarse**: the whole image is area-downscaled so its short side is ``coarse_size`` (256, the
   resolution LaMa/GLaMa models are trained at, where they fill even large holes well) and run on
   ``engine``. A low-resolution pixel is a hole only where its whole cell is hole; the others hold
   the average of their cell's known pixels (:func:`.scaling.downscale`, rule "known"), so fine
   masks (Nearest-Neighbour, Every-N-Lines) leave the coarse model their known content.
2. **Upsample**: the coarse prediction is upsampled bilinearly and replaces the holes. It is sampled
   per tile on demand, so no full-resolution float copy of it ever exists (an 8K image stays cheap).
3. **Refine**: ``refine_engine`` (its own weights; ``engine`` when there is only one model) runs at
   full resolution on the coarse-filled image and the mask, through the mask-aware tiler of
   :mod:`.tiling`: one tile when the image fits into ``tile``, otherwise tiles over the holes only.

A refine model (built with ``get_config(name, zero_holes=False)``) sees the coarse fill inside the
holes, as it was trained. A single LaMa-style model zeroes the holes, so in a hole that fits a tile
it simply re-inpaints at full resolution; in holes too large for one tile the tiler shows it the
coarse fill around each core as context (see :mod:`.tiling`).
"""

from __future__ import annotations

import numpy as np

from .cost import FULL_MAX_PIXELS
from .scaling import COARSE_RULE
from .tiling import CoarseFill, Rect, check_options, downscale, for_each_image, inpaint_tiled


def coarse_pass(
    engine, image: np.ndarray, mask: np.ndarray, coarse_size: int = 256, rule: str = COARSE_RULE
) -> CoarseFill:
    """Stage 1 on one image (3,H,W) / (H,W): the prediction at short side ``coarse_size``
    (never upscaled: a smaller image runs at its own size)."""
    h, w = mask.shape
    scale = min(1.0, coarse_size / min(h, w))
    size = (max(8, round(h * scale)), max(8, round(w * scale)))
    full = Rect(0, h, 0, w)
    img, m = downscale(image, mask, full, size, rule)
    return CoarseFill(full, engine(img, m)[0])


def inpaint_two_stage(
    engine,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    refine_engine=None,
    coarse_size: int = 256,
    tile: int = 512,
    overlap: int = 64,
    margin: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
    out: np.ndarray | None = None,
    full_max_pixels: int = FULL_MAX_PIXELS,
    coarse_rule: str = COARSE_RULE,
) -> np.ndarray:
    """Two-stage inpainting of one image: ``image`` (3,H,W) float32, ``mask`` (H,W) -> (3,H,W)."""
    overlap, margin = check_options(tile, overlap, margin, batch_size, coarse_size)
    if out is None:
        out = np.array(image, dtype=np.float32, copy=True)
    if not (mask > 0.5).any():
        return out
    fill = coarse_pass(engine, image, mask, coarse_size, coarse_rule)
    refiner = refine_engine or engine
    return inpaint_tiled(
        refiner,
        image,
        mask,
        tile=tile,
        overlap=overlap,
        margin=margin,
        coarse_size=coarse_size,
        refine_engine=refiner,
        batch_size=batch_size,
        progress=progress,
        fill=fill,
        out=out,
        desc="refine",
        full_max_pixels=full_max_pixels,
    )


def two_stage(engine, image: np.ndarray, mask: np.ndarray, **kw) -> np.ndarray:
    """NCHW batch version of :func:`inpaint_two_stage`."""
    return for_each_image(inpaint_two_stage, engine, image, mask, **kw)
