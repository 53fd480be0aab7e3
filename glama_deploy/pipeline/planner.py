"""Planning: cut a hole mask into regions and tiles (see :mod:`.tiling` for the rules)."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from .cost import choose_plan
from .layout import ALIGN, CELL, Plan, Rect, Region, Tile, _owned

log = logging.getLogger(__name__)


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


def plan_tiles(
    hole: np.ndarray,
    tile: int = 512,
    overlap: int = 64,
    margin: int | None = None,
    *,
    coarse_size: int = 256,
    full_max_pixels: int = 0,
) -> Plan:
    """Cut one image's hole mask (H, W bool) into regions and tiles (see :mod:`.tiling`), then
    apply the cost model of :mod:`.cost`: tiles merged, or one full-frame pass when that processes
    fewer pixels and the frame has at most ``full_max_pixels`` (0: plain tiles, nothing merged)."""
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
    plan = Plan((h, w), regions, tiles, cell_region, tile, overlap, margin, info)
    return choose_plan(plan, hole, coarse_size, full_max_pixels)
