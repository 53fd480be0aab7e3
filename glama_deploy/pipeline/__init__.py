"""Whole-image, tiled and two-stage inference on top of any Engine.

``full``       the engine on the whole image (its memory grows with the image: fine up to ~2K).
``tiled``      mask-aware tiles around the holes only; big holes get a low-resolution coarse pass
               first (:mod:`.tiling`). A cost model in pixels merges tiles, or runs the whole
               frame once when tiles would cost more (:mod:`.cost`). Memory is bounded by the
               tile batch, or by ``full_max_pixels`` when tiles merge / the frame runs whole.
``two-stage``  GLaMa's coarse (short side ``coarse_size``) + refine at full resolution, the refine
               stage tiled when the image is larger than a tile (:mod:`.two_stage`).
"""

from __future__ import annotations

import numpy as np

MODES = ("full", "tiled", "two-stage")


def run(
    engine,
    image: np.ndarray,
    mask: np.ndarray,
    mode: str = "full",
    *,
    tile: int = 512,
    overlap: int = 64,
    coarse_size: int = 256,
    refine_engine=None,
    progress: bool = False,
    margin: int | None = None,
    batch_size: int = 1,
    full_max_pixels: int | None = None,
    coarse_rule: str | None = None,
) -> np.ndarray:
    """Inpaint NCHW ``image`` / ``mask`` with ``engine`` in the given mode; returns NCHW float32.

    ``tile``/``overlap``/``margin``: tile side, blend width between tiles of one big hole, context
    kept around holes (default tile // 8). ``batch_size``: tiles per engine call. ``coarse_size``:
    resolution of coarse passes. ``refine_engine``: the second-stage model (two-stage) and the
    refiner of big holes (tiled); default ``engine``. ``full_max_pixels``: tiled/two-stage merge
    tiles or run one full-frame pass when that processes fewer pixels, never creating an engine
    input above this many pixels (default 4096 x 4096; 0 = tiles only, see :mod:`.cost`).
    ``coarse_rule``: which low-res pixels of a coarse pass are holes (default "known", see
    :func:`.scaling.downscale`). Known pixels are returned bit-exactly.
    """
    if getattr(engine, "is_pipeline", False):
        # a server-side pipeline (Triton glama_pipeline) tiles itself: send the whole image once
        return engine.run(image, mask, mode, tile=tile, overlap=overlap, coarse_size=coarse_size)
    if mode == "full":
        return engine(image, mask)
    opts = dict(
        tile=tile,
        overlap=overlap,
        margin=margin,
        coarse_size=coarse_size,
        refine_engine=refine_engine,
        batch_size=batch_size,
        progress=progress,
    )
    if full_max_pixels is not None:
        opts["full_max_pixels"] = full_max_pixels
    if coarse_rule is not None:
        opts["coarse_rule"] = coarse_rule
    if mode == "tiled":
        from .tiling import for_each_image, inpaint_tiled

        return for_each_image(inpaint_tiled, engine, image, mask, **opts)
    if mode == "two-stage":
        from .two_stage import two_stage

        return two_stage(engine, image, mask, **opts)
    raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")


__all__ = ["MODES", "run"]
