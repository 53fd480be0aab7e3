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
4. Known pixels are copied from the input, bit-exactly.

Memory: apart from the output array (one copy of the input), the working set is one batch of
tiles, the low-resolution coarse images and a one-channel weight sum over each big region's bbox.
Nothing image-sized in float is created. Tiles go to the engine in batches of ``batch_size``,
grouped by shape.

Equivalence with full-frame inference: tile origins lie on multiples of 8 (the network's total
stride) and a tile that reaches the right/bottom image edge ends exactly there (same padding as
the full frame), so for a network with a finite receptive field the tiled result equals the
full-frame one wherever the receptive field of the hole pixels fits into their tile.
"""

from __future__ import annotations

import logging
import math
import sys
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)

CELL = 8  # grid cell for clustering holes (px)
ALIGN = 8  # tile origins are multiples of this (the generator's total stride)


@dataclass(frozen=True)
class Rect:
    """Half-open pixel rectangle [y0, y1) x [x0, x1)."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def area(self) -> int:
        return self.h * self.w

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def contains(self, other: Rect) -> bool:
        return self.y0 <= other.y0 and self.x0 <= other.x0 and other.y1 <= self.y1 and other.x1 <= self.x1


@dataclass
class Region:
    """A cluster of holes processed together. ``bbox`` is the tight bbox of its hole pixels."""

    index: int
    bbox: Rect
    big: bool


@dataclass
class Tile:
    """One engine input: ``window`` is what the engine sees, ``core`` where its output is used."""

    region: int
    window: Rect
    core: Rect
    refine: bool  # a core of a big region (blended; sees the fill)
    # raised-cosine ramp lengths on the (top, bottom, left, right) side of the core; 0 = no ramp
    ramps: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass
class Plan:
    """Regions and tiles for one image, plus the cell->region map used to tell holes apart."""

    shape: tuple[int, int]
    regions: list[Region]
    tiles: list[Tile]
    cell_region: np.ndarray  # (ceil(H/CELL), ceil(W/CELL)) int32, -1 = no hole
    tile: int
    overlap: int
    margin: int
    info: dict = field(default_factory=dict)

    def owned(self, hole: np.ndarray, region: int, win: Rect) -> np.ndarray:
        """Bool mask (win.h, win.w): the hole pixels of ``region`` inside ``win``."""
        return _owned(self.cell_region, hole, region, win)


def _owned(cell_region: np.ndarray, hole: np.ndarray, region: int, win: Rect) -> np.ndarray:
    cy0, cy1 = win.y0 // CELL, -(-win.y1 // CELL)
    cx0, cx1 = win.x0 // CELL, -(-win.x1 // CELL)
    cells = cell_region[cy0:cy1, cx0:cx1] == region
    own = np.repeat(np.repeat(cells, CELL, axis=0), CELL, axis=1)
    oy, ox = win.y0 - cy0 * CELL, win.x0 - cx0 * CELL
    return own[oy : oy + win.h, ox : ox + win.w] & hole[win.slices()]


def default_margin(tile: int, overlap: int) -> int:
    """Context kept around holes: tile // 8 (64 px for 512 tiles), at least ``overlap`` // 2."""
    return max(tile // 8, overlap // 2, 8)


def refine_ring(overlap: int, margin: int) -> int:
    """Context around each core of a big hole: overlap // 2 (32 px by default), 8..margin. The
    coarse pass already supplies the layout; the ring only has to tie a core to its surroundings."""
    return max(8, min(margin, overlap // 2))


def check_options(
    tile: int, overlap: int, margin: int | None, batch_size: int, coarse_size: int
) -> tuple[int, int]:
    """Validate tiling options (InputError, a ValueError with a one-line message); returns the
    (overlap, margin) to use: an overlap above tile/4 is reduced to tile/4 with a warning."""
    from ..io import InputError

    if int(tile) != tile or tile < 64:
        raise InputError(f"tile must be an integer >= 64, got {tile}")
    if int(overlap) != overlap or overlap < 0:
        raise InputError(f"overlap must be an integer >= 0, got {overlap}")
    if overlap > tile // 4:
        log.warning("overlap %d reduced to tile/4 = %d for %d px tiles", overlap, tile // 4, tile)
        overlap = tile // 4
    margin = default_margin(tile, overlap) if margin is None else margin
    if int(margin) != margin or margin < 0 or 2 * margin + overlap + 16 > tile:
        raise InputError(
            f"margin must be >= 0 and leave room in the tile (2*margin + overlap + 16 <= "
            f"{tile}), got {margin}"
        )
    if int(batch_size) != batch_size or batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if int(coarse_size) != coarse_size or coarse_size < 16:
        raise InputError(f"coarse_size must be an integer >= 16, got {coarse_size}")
    return int(overlap), int(margin)


# --------------------------------------------------------------------------------------- planning
def _cell_grid(hole: np.ndarray) -> np.ndarray:
    """(ceil(H/CELL), ceil(W/CELL)) uint8: 1 where a cell holds a hole pixel."""
    h, w = hole.shape
    gh, gw = -(-h // CELL), -(-w // CELL)
    grid = np.zeros((gh, gw), np.uint8)
    hb, wb = h // CELL * CELL, w // CELL * CELL
    if hb and wb:
        grid[: hb // CELL, : wb // CELL] = (
            hole[:hb, :wb].reshape(hb // CELL, CELL, wb // CELL, CELL).any(axis=(1, 3))
        )
    if hb < h:  # last partial row of cells
        grid[-1, :] |= np.add.reduceat(hole[hb:, :].any(axis=0), np.arange(0, w, CELL)) > 0
    if wb < w:
        grid[:, -1] |= np.add.reduceat(hole[:, wb:].any(axis=1), np.arange(0, h, CELL)) > 0
    return grid


def _place(lo: int, hi: int, size: int, n: int) -> tuple[int, int]:
    """A window of about ``size`` px centred on [lo, hi), inside [0, n), origin on a multiple of
    ALIGN; a window that touches the far edge ends exactly at it."""
    if size >= n:
        return 0, n
    start = min(max((lo + hi - size) // 2, 0), n - size)
    at_end = start + size == n
    start -= start % ALIGN
    end = n if at_end else start + size
    return start, max(end, hi)


def _split(b0: int, b1: int, cmax: int, overlap: int) -> list[tuple[int, int]]:
    """Cores of equal length <= cmax covering [b0, b1), consecutive ones overlapping >= overlap."""
    length = b1 - b0
    if length <= cmax:
        return [(b0, b1)]
    n = math.ceil((length - overlap) / (cmax - overlap))
    c = min(cmax, math.ceil((length + (n - 1) * overlap) / n))
    return [
        (b0 + round(i * (length - c) / (n - 1)), b0 + round(i * (length - c) / (n - 1)) + c) for i in range(n)
    ]


def _tight_bbox(hole: np.ndarray, cells: np.ndarray, cy: slice, cx: slice) -> Rect:
    """Tight pixel bbox of the hole pixels lying in the marked cells of the cell window (cy, cx)."""
    h, w = hole.shape
    y0, x0 = cy.start * CELL, cx.start * CELL
    y1, x1 = min(cy.stop * CELL, h), min(cx.stop * CELL, w)
    own = np.repeat(np.repeat(cells, CELL, axis=0), CELL, axis=1)[: y1 - y0, : x1 - x0] & hole[y0:y1, x0:x1]
    rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
    return Rect(int(y0 + rows[0]), int(y0 + rows[-1] + 1), int(x0 + cols[0]), int(x0 + cols[-1] + 1))


def _fits(b: Rect, shape: tuple[int, int], tile: int, margin: int) -> bool:
    """Does the bbox plus ``margin`` on every side (clipped to the image) fit into one tile?"""
    h, w = shape
    span_y = min(h, b.y1 + margin) - max(0, b.y0 - margin)
    span_x = min(w, b.x1 + margin) - max(0, b.x0 - margin)
    return span_y <= min(tile, h) and span_x <= min(tile, w)


def _union(a: Rect, b: Rect) -> Rect:
    return Rect(min(a.y0, b.y0), max(a.y1, b.y1), min(a.x0, b.x0), max(a.x1, b.x1))


def plan_tiles(hole: np.ndarray, tile: int = 512, overlap: int = 64, margin: int | None = None) -> Plan:
    """Cut one image's hole mask (H, W bool) into regions and tiles (see the module docstring)."""
    margin = default_margin(tile, overlap) if margin is None else margin
    h, w = hole.shape
    grid = _cell_grid(hole)
    dil = cv2.dilate(grid, np.ones((3, 3), np.uint8))
    n_lab, labels = cv2.connectedComponents(dil, connectivity=8)
    labels[grid == 0] = 0  # dilation only links cells; a region owns its hole cells only
    comps: list[tuple[Rect, int]] = []
    for lab, (x, y, bw, bh, _area) in enumerate(cv2.connectedComponentsWithStats(dil, connectivity=8)[2]):
        if lab == 0:
            continue
        x, y, bw, bh = int(x), int(y), int(bw), int(bh)
        cy, cx = slice(y, y + bh), slice(x, x + bw)
        cells = labels[cy, cx] == lab
        if not cells.any():
            continue
        comps.append((_tight_bbox(hole, cells, cy, cx), lab))
    # deterministic order: top-to-bottom, left-to-right
    comps.sort(key=lambda c: (c[0].y0, c[0].x0, c[0].y1, c[0].x1))

    # greedy packing of small components whose union still fits one tile with its margin
    packs: list[tuple[Rect, list[int]]] = []
    pack_arr = np.zeros((0, 4), np.int64)  # bboxes of the packs still open to more holes
    pack_open = np.zeros(0, bool)
    for bbox, lab in comps:
        small = _fits(bbox, (h, w), tile, margin)
        if small and len(pack_arr):
            uy0 = np.minimum(pack_arr[:, 0], bbox.y0)
            uy1 = np.maximum(pack_arr[:, 1], bbox.y1)
            ux0 = np.minimum(pack_arr[:, 2], bbox.x0)
            ux1 = np.maximum(pack_arr[:, 3], bbox.x1)
            sy = np.minimum(h, uy1 + margin) - np.maximum(0, uy0 - margin)
            sx = np.minimum(w, ux1 + margin) - np.maximum(0, ux0 - margin)
            ok = np.flatnonzero(pack_open & (sy <= min(tile, h)) & (sx <= min(tile, w)))
            if len(ok):
                i = int(ok[0])
                u = _union(packs[i][0], bbox)
                packs[i][1].append(lab)
                packs[i] = (u, packs[i][1])
                pack_arr[i] = (u.y0, u.y1, u.x0, u.x1)
                continue
        packs.append((bbox, [lab]))
        pack_arr = np.vstack([pack_arr, np.array([[bbox.y0, bbox.y1, bbox.x0, bbox.x1]], np.int64)])
        pack_open = np.append(pack_open, small)  # a big component never takes others in

    lut = np.full(n_lab, -1, np.int32)
    regions: list[Region] = []
    for i, (bbox, labs) in enumerate(packs):
        lut[labs] = i
        regions.append(Region(i, bbox, big=not _fits(bbox, (h, w), tile, margin)))
    cell_region = lut[labels]

    tiles: list[Tile] = []
    ring = refine_ring(overlap, margin)
    cmax = tile - 2 * ring
    for reg in regions:
        b = reg.bbox
        if not reg.big:
            y0, y1 = _place(b.y0, b.y1, tile, h)
            x0, x1 = _place(b.x0, b.x1, tile, w)
            tiles.append(Tile(reg.index, Rect(y0, y1, x0, x1), b, refine=False))
            continue
        ys, xs = _split(b.y0, b.y1, cmax, overlap), _split(b.x0, b.x1, cmax, overlap)
        for iy, (cy0, cy1) in enumerate(ys):
            for ix, (cx0, cx1) in enumerate(xs):
                core = Rect(cy0, cy1, cx0, cx1)
                if not _owned(cell_region, hole, reg.index, core).any():
                    continue
                # one axis with a single core: full tile of context on it (as small regions get)
                wy = _place(cy0, cy1, tile if len(ys) == 1 else cy1 - cy0 + 2 * ring, h)
                wx = _place(cx0, cx1, tile if len(xs) == 1 else cx1 - cx0 + 2 * ring, w)
                ramps = (
                    ys[iy - 1][1] - cy0 if iy > 0 else 0,
                    cy1 - ys[iy + 1][0] if iy + 1 < len(ys) else 0,
                    xs[ix - 1][1] - cx0 if ix > 0 else 0,
                    cx1 - xs[ix + 1][0] if ix + 1 < len(xs) else 0,
                )
                tiles.append(Tile(reg.index, Rect(*wy, *wx), core, refine=True, ramps=ramps))
    info = {
        "regions": len(regions),
        "big_regions": sum(r.big for r in regions),
        "tiles": len(tiles),
        "tile_pixels": int(sum(t.window.area for t in tiles)),
    }
    return Plan((h, w), regions, tiles, cell_region, tile, overlap, margin, info)


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


# ------------------------------------------------------------------------------------------ fills
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


def downscale(
    image: np.ndarray, mask: np.ndarray, rect: Rect, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Area-downscale image (3,H,W) and mask (H,W) over ``rect`` to ``size`` = (h, w). A low-res
    pixel touching any hole is a hole, so low-res known pixels hold known content only."""
    hs, ws = size
    sl = rect.slices()
    img = np.empty((1, 3, hs, ws), np.float32)
    for c in range(3):
        img[0, c] = cv2.resize(np.ascontiguousarray(image[c][sl]), (ws, hs), interpolation=cv2.INTER_AREA)
    m = cv2.resize(np.ascontiguousarray(mask[sl], dtype=np.float32), (ws, hs), interpolation=cv2.INTER_AREA)
    return img, (m > 0)[None, None].astype(np.float32)


# ------------------------------------------------------------------------------ engine inspection
_SEES_HOLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def sees_hole_content(engine) -> bool:
    """True if the engine's model reads the pixels under the mask (a refine model built with
    ``zero_holes=False``); False for LaMa-style models, which zero them.

    Read from an engine attribute ``zero_holes`` (any backend may set it), the model config
    (torch), the ONNX metadata (onnxruntime) or a ``config`` entry of a TensorRT plan's sidecar;
    otherwise probed once with a batch of two images that differ only inside the hole (64x64, or
    the smallest size the engine's optimization profile allows). Cached per engine.
    """
    try:
        return _SEES_HOLES[engine]
    except (KeyError, TypeError):
        pass
    result = _inspect_zero_holes(engine)
    sees = _probe_sees_holes(engine) if result is None else not result
    try:
        _SEES_HOLES[engine] = sees
    except TypeError:
        pass
    return sees


def _probe_sees_holes(engine) -> bool:
    side = 64
    profile = getattr(engine, "profile", None)
    if isinstance(profile, dict) and "min" in profile:  # TensorRT: (N, H, W) bounds
        side = max(side, *profile["min"][1:])
        side += -side % ALIGN
    rng = np.random.default_rng(0)
    x = np.repeat(rng.random((1, 3, side, side), dtype=np.float32), 2, axis=0)
    m = np.zeros((2, 1, side, side), np.float32)
    q = side // 4
    m[:, :, q:-q, q:-q] = 1
    x[1, :, q:-q, q:-q] = 1 - x[0, :, q:-q, q:-q]
    try:
        y = engine(x, m)
    except Exception as e:  # e.g. a profile without batch 2: assume the common LaMa-style model
        log.warning(
            "could not probe whether %s reads hole pixels (%s); assuming it zeroes them",
            getattr(engine, "name", engine),
            e,
        )
        return False
    return not np.allclose(y[0], y[1], atol=1e-6)


def _inspect_zero_holes(engine) -> bool | None:
    import json

    if isinstance(getattr(engine, "zero_holes", None), bool):
        return engine.zero_holes
    cfg = getattr(getattr(engine, "model", None), "config", None)
    if isinstance(getattr(cfg, "zero_holes", None), bool):
        return cfg.zero_holes
    sidecar = getattr(engine, "sidecar", None)
    if isinstance(sidecar, dict) and "config" in sidecar:
        cfg = sidecar["config"]
        cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
        if isinstance(cfg, dict) and isinstance(cfg.get("zero_holes"), bool):
            return cfg["zero_holes"]
    session = getattr(engine, "session", None)
    if session is not None:
        try:
            meta = session.get_modelmeta().custom_metadata_map
            return bool(json.loads(meta["config"]).get("zero_holes", True))
        except Exception:  # no / foreign metadata
            return None
    return None


# ------------------------------------------------------------------------------------- execution
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
) -> np.ndarray:
    """Tiled inpainting of one image: ``image`` (3,H,W) float32, ``mask`` (H,W); returns (3,H,W).

    ``fill`` (two-stage): a coarse prediction of the whole image; every tile then runs on
    ``refine_engine`` (default ``engine``) with the fill in the holes. Without it, big regions get
    their own coarse pass on ``engine`` and refine on ``refine_engine or engine``.
    ``out``: array to write into (default: a copy of ``image``).
    """
    overlap, margin = check_options(tile, overlap, margin, batch_size, coarse_size)
    hole = mask > 0.5
    if out is None:
        out = np.array(image, dtype=np.float32, copy=True)
    if not hole.any():
        return out
    plan = plan or plan_tiles(hole, tile, overlap, margin)
    refiner = refine_engine or engine
    regions = plan.regions
    log.debug("tiling %dx%d: %s", *hole.shape, plan.info)

    coarse_jobs = [r for r in regions if r.big] if fill is None else []
    bar = _progress(len(coarse_jobs) + len(plan.tiles), progress, desc)
    fills: dict[int, CoarseFill] = {}
    for reg in coarse_jobs:  # one low-resolution pass per big region
        fills[reg.index] = _region_coarse(engine, image, mask, reg.bbox, plan, coarse_size)
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
    engine, image: np.ndarray, mask: np.ndarray, b: Rect, plan: Plan, coarse_size: int
) -> CoarseFill:
    """Run a big region once at reduced resolution: hole bbox + context (a quarter of the hole's
    long side, at least the margin), scaled so the hole's long side is ``coarse_size`` and the
    whole crop fits into one tile."""
    h, w = plan.shape
    ctx = max(plan.margin, max(b.h, b.w) // 4)
    rect = Rect(max(0, b.y0 - ctx), min(h, b.y1 + ctx), max(0, b.x0 - ctx), min(w, b.x1 + ctx))
    scale = min(1.0, coarse_size / max(b.h, b.w), plan.tile / max(rect.h, rect.w))
    size = (max(8, round(rect.h * scale)), max(8, round(rect.w * scale)))
    img, m = downscale(image, mask, rect, size)
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
