"""Mask-aware tiled inference: only the parts of an image that hold holes are run, tile by tile.

How an image is cut (all positions are deterministic functions of the mask and the options):

1. **Regions.** Hole pixels are pooled onto a grid of 8x8 cells, the grid is dilated by one cell
   and split into connected components (``cv2.connectedComponents``), so distant small holes never
   force one giant tile. Small components are then greedily packed together while their union
   still fits into one tile with its context margin (holes 100 px apart share a tile).
2. **Small region** (hole bbox + ``margin`` on each side fits into ``tile``): one tile of size
   ``tile`` centred on the holes (clamped to the image, origin on a multiple of 8). Its prediction is
   used for the region's hole pixels, unblended.
3. **Big region** (a hole larger than a tile can hold with its context): LaMa fails on holes that
   are large *at the resolution it runs at* (GLaMa section 4.5, the reason for its two-stage
   model), and a tile deep inside a big hole sees no known pixel at all. So the region (hole bbox
   + context of a quarter of its size) is first run once at reduced resolution, scaled so the hole's
   long side is ``coarse_size`` (256: the training scale), and that coarse prediction, upsampled
   bilinearly, becomes the *fill*. Then a grid of **cores** covers the hole bbox, consecutive cores
   overlapping by ``overlap``; each core is run as a tile of core + a ring of ``overlap // 2``
   px (8..margin) of context on every side, at most ``tile`` px (an axis the region fits on gets
   the full tile). What the refining engine sees depends on the model:

   * a refine model (``zero_holes=False``, GLaMa's second stage) gets the coarse-filled image and
     the full hole mask, as it was trained;
   * a LaMa-style model zeroes whatever is under the mask, so a fill it has to inpaint would be
     invisible to it: it gets the mask only over its core, and the coarse fill around the core is
     shown as context. All tiles are then conditioned on the same coarse layout, which keeps them
     consistent with each other.

   Core predictions are blended with raised-cosine weights that form a partition of unity across
   each overlap; only the region's hole pixels are ever written.
4. **Cost model** (:mod:`.cost`): the plan's cost is the pixels the engine processes (tile
   windows padded to the engine's multiple, plus the coarse passes). Context-only tiles are merged
   while the union window costs no more than the two; if the plan still costs at least one
   full-frame pass and the frame has at most ``full_max_pixels`` (the memory bound, default
   4096 x 4096), the whole frame runs in one pass instead (scattered holes: 30 tiles of a 2560x1600
   photo cost 2x the frame). ``full_max_pixels=0`` keeps the tiles.
5. Known pixels are copied from the input, bit-exactly.

Coarse passes (big regions here, the whole image in two-stage mode) downscale with
:func:`.scaling.downscale`: a low-res pixel is a hole only where its whole cell is hole, and the
known ones hold the mean of their cell's known pixels, so fine masks keep their known content.

Memory: apart from the output array (one copy of the input), the working set is one batch of
tiles (or one merged window / the frame, never above ``full_max_pixels``), the low-resolution
coarse images and a one-channel weight sum over each big region's bbox. Tiles go to the engine in
batches of ``batch_size``, grouped by shape.

Equivalence with full-frame inference: tile origins lie on multiples of 8 (the network's total
stride) and a tile that reaches the right/bottom image edge ends exactly there (same padding as
the full frame), so for a network with a finite receptive field the tiled result equals the
full-frame one wherever the receptive field of the hole pixels fits into their tile.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable

import numpy as np

from .blend import ramp_weights
from .cost import FULL_MAX_PIXELS, coarse_geometry
from .layout import ALIGN, CELL, Plan, Rect, Region, Tile
from .planner import check_options, default_margin, plan_tiles, refine_ring
from .probe import sees_hole_content
from .scaling import COARSE_RULE, CoarseFill, downscale

log = logging.getLogger(__name__)

__all__ = [
    "ALIGN", "CELL", "CoarseFill", "Plan", "Rect", "Region", "Tile", "check_options", "default_margin",
    "downscale", "for_each_image", "inpaint_tiled", "plan_tiles", "ramp_weights", "refine_ring",
    "sees_hole_content",
]


def _batches(tiles: list[Tile], batch_size: int) -> Iterable[list[Tile]]:
    """Tiles grouped by window shape and kind (first-seen order), in chunks of ``batch_size``."""
    groups: dict[tuple[int, int, bool], list[Tile]] = {}
    for t in tiles:
        groups.setdefault((t.window.h, t.window.w, t.refine), []).append(t)
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            yield group[i : i + batch_size]


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled or total == 0:
        return _NoProgress()  # tqdm is imported only when a bar is shown (the Triton env may lack it)
    from tqdm import tqdm

    return tqdm(total=total, unit="tile", desc=desc, disable=not enabled or total == 0, file=sys.stderr)


def inpaint_tiled(
    engine,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    tile: int = 512,
    overlap: int = 64,
    margin: int | None = None,
    coarse_size: int = 256,
    refine_engine=None,
    batch_size: int = 4,
    progress: bool = False,
    fill: CoarseFill | None = None,
    out: np.ndarray | None = None,
    plan: Plan | None = None,
    desc: str = "tiles",
    full_max_pixels: int = FULL_MAX_PIXELS,
    coarse_rule: str = COARSE_RULE,
) -> np.ndarray:
    """Tiled inpainting of one image: ``image`` (3,H,W) float32, ``mask`` (H,W); returns (3,H,W).

    ``fill`` (two-stage): a coarse prediction of the whole image; every tile then runs on
    ``refine_engine`` (default ``engine``) with the fill in the holes. Without it, big regions get
    their own coarse pass on ``engine`` and refine on ``refine_engine or engine``.
    ``out``: array to write into (default: a copy of ``image``). ``full_max_pixels``: the
    memory bound of the cost model (:mod:`.cost`): tiles are merged, or the whole frame is run in
    one pass, when that processes fewer pixels and no engine input exceeds this many pixels.
    ``coarse_rule``: which low-resolution pixels of a coarse pass are holes (:func:`downscale`).
    """
    overlap, margin = check_options(tile, overlap, margin, batch_size, coarse_size)
    hole = mask > 0.5
    if out is None:
        out = np.array(image, dtype=np.float32, copy=True)
    if not hole.any():
        return out
    plan = plan or plan_tiles(
        hole, tile, overlap, margin, coarse_size=coarse_size, full_max_pixels=full_max_pixels
    )
    refiner = refine_engine or engine
    regions = plan.regions
    log.debug("tiling %dx%d: %s", *hole.shape, plan.info)

    coarse_jobs = [r for r in regions if r.big] if fill is None else []
    bar = _progress(len(coarse_jobs) + len(plan.tiles), progress, desc)
    fills: dict[int, CoarseFill] = {}
    for reg in coarse_jobs:  # one low-resolution pass per big region
        fills[reg.index] = _region_coarse(engine, image, mask, reg.bbox, plan, coarse_size, coarse_rule)
        bar.update(1)

    needs_fill = any(t.refine for t in plan.tiles) or fill is not None
    sees_holes = sees_hole_content(refiner) if needs_fill else False
    wsums = {r.index: np.zeros((r.bbox.h, r.bbox.w), np.float32) for r in regions if r.big}
    for r in regions:  # blended regions accumulate into out: start their holes from zero
        if r.big:
            own = plan.owned(hole, r.index, r.bbox)
            out[(slice(None), *r.bbox.slices())][:, own] = 0.0

    for batch in _batches(plan.tiles, batch_size):
        xs, ms = [], []
        for t in batch:
            win = t.window
            sl = (slice(None), *win.slices())
            x = np.array(image[sl], dtype=np.float32, copy=True)
            m = hole[win.slices()].copy()
            src = fill if fill is not None else fills.get(t.region)
            use_fill = src is not None and (t.refine or fill is not None)
            if use_fill:
                f = src.sample(win)
                x[:, m] = f[:, m]
                if t.refine and not sees_holes:
                    # LaMa-style model: the coarse fill around the core is shown as context
                    own = plan.owned(hole, t.region, win)
                    cy, cx = t.core.y0 - win.y0, t.core.x0 - win.x0
                    in_core = np.zeros_like(m)
                    in_core[cy : cy + t.core.h, cx : cx + t.core.w] = True
                    m &= ~(own & ~in_core)
            xs.append(x)
            ms.append(m)
        pred = refiner if any(t.refine for t in batch) or fill is not None else engine
        y = pred(np.stack(xs), np.stack(ms)[:, None].astype(np.float32))
        for t, yt in zip(batch, y, strict=True):
            win, core = t.window, t.core
            cy, cx = core.y0 - win.y0, core.x0 - win.x0
            pc = yt[:, cy : cy + core.h, cx : cx + core.w]
            own = plan.owned(hole, t.region, core)
            dst = out[(slice(None), *core.slices())]
            if t.refine:
                wgt = ramp_weights(t) * own
                dst += pc * wgt
                b = regions[t.region].bbox
                wsums[t.region][core.y0 - b.y0 : core.y1 - b.y0, core.x0 - b.x0 : core.x1 - b.x0] += wgt
            else:
                dst[:, own] = pc[:, own]
        bar.update(len(batch))
    bar.close()

    for r in regions:
        if r.big:
            own = plan.owned(hole, r.index, r.bbox)
            dst = out[(slice(None), *r.bbox.slices())]
            ws = wsums[r.index]
            if (ws[own] <= 0).any():  # cannot happen: cores cover every owned pixel
                raise RuntimeError("tiling left hole pixels uncovered")
            dst[:, own] /= ws[own]
    return out


def _region_coarse(
    engine, image: np.ndarray, mask: np.ndarray, b: Rect, plan: Plan, coarse_size: int, rule: str = COARSE_RULE
) -> CoarseFill:
    """Run a big region once at reduced resolution: hole bbox + context (a quarter of the hole's
    long side, at least the margin), scaled so the hole's long side is ``coarse_size`` and the
    whole crop fits into one tile."""
    rect, size = coarse_geometry(b, plan.shape, plan.margin, plan.tile, coarse_size)
    img, m = downscale(image, mask, rect, size, rule)
    return CoarseFill(rect, engine(img, m)[0])


def for_each_image(
    fn: Callable[..., np.ndarray], engine, image: np.ndarray, mask: np.ndarray, **kw
) -> np.ndarray:
    """Apply a per-image (3,H,W)/(H,W) function over an NCHW batch; output NCHW float32."""
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (N,3,H,W), got {image.shape}")
    if (
        mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != image.shape[0]
        or mask.shape[2:] != image.shape[2:]
    ):
        raise ValueError(f"mask must be (N,1,H,W) matching image {image.shape}, got {mask.shape}")
    out = np.array(image, dtype=np.float32, copy=True)
    for i in range(image.shape[0]):
        fn(engine, image[i], mask[i, 0], out=out[i], **kw)
    return out
