"""The tiler's cost model: pixels the engine processes, tiles merged or one full-frame pass.

The engine's time grows with the pixels it is given (the generator is convolutional plus FFTs, so
close to linear), and tiles of a batch cost the sum of their areas. A plan's cost is therefore

    sum over tiles of the window area padded to the engine's multiple (8, at least 16 px a side)
    + the pixels of every low-resolution coarse pass

and one full-frame pass costs the padded frame area. After planning, the tiler

1. **merges** context-only tiles (small regions) pairwise, greedily largest saving first, whenever
   the bounding rectangle of the two windows costs no more than the two windows (overlapping or
   adjacent windows), and the merged window stays within ``full_max_pixels``;
2. **falls back to one full-frame pass** (exactly what ``mode="full"`` computes) when the merged
   plan still costs at least the frame and the frame fits in ``full_max_pixels``.

``full_max_pixels`` is the memory bound: no engine input larger than it is created (the tile batch
bounds memory below it). ``full_max_pixels=0`` keeps the plain tile plan (memory bounded by one
batch of tiles).
"""

from __future__ import annotations

import numpy as np

from .layout import ALIGN, CELL, Plan, Rect, Region, Tile

FULL_MAX_PIXELS = 4096 * 4096  # default memory bound (same default as the Triton pipeline's)
MIN_SIDE = 2 * ALIGN  # engines pad a side to at least this


def padded(n: int) -> int:
    """Side length the engine actually runs: padded to ALIGN, at least MIN_SIDE."""
    n = max(n, MIN_SIDE)
    return n + (-n) % ALIGN


def padded_area(r: Rect) -> int:
    """Pixels the engine processes for window ``r``."""
    return padded(r.h) * padded(r.w)


def coarse_geometry(
    b: Rect, shape: tuple[int, int], margin: int, tile: int, coarse_size: int
) -> tuple[Rect, tuple[int, int]]:
    """Crop and low-res size of a big region's coarse pass: hole bbox ``b`` + context (a quarter
    of its long side, at least ``margin``), scaled so the hole's long side is ``coarse_size`` and
    the crop fits one tile."""
    h, w = shape
    ctx = max(margin, max(b.h, b.w) // 4)
    rect = Rect(max(0, b.y0 - ctx), min(h, b.y1 + ctx), max(0, b.x0 - ctx), min(w, b.x1 + ctx))
    scale = min(1.0, coarse_size / max(b.h, b.w), tile / max(rect.h, rect.w))
    return rect, (max(8, round(rect.h * scale)), max(8, round(rect.w * scale)))


def plan_cost(plan: Plan, coarse_size: int) -> int:
    """Pixels processed by ``plan``: padded tile windows + coarse passes of its big regions."""
    cost = sum(padded_area(t.window) for t in plan.tiles)
    for r in plan.regions:
        if r.big and not plan.info.get("full_frame"):
            _, (hs, ws) = coarse_geometry(r.bbox, plan.shape, plan.margin, plan.tile, coarse_size)
            cost += padded(hs) * padded(ws)
    return int(cost)


def frame_cost(shape: tuple[int, int]) -> int:
    """Pixels processed by one full-frame pass."""
    return padded(shape[0]) * padded(shape[1])


def _bound(r: Rect) -> tuple[int, int, int, int]:
    return r.y0, r.y1, r.x0, r.x1


def merge_small_tiles(plan: Plan, max_pixels: int) -> Plan:
    """Merge context-only tiles while the union window costs no more than the two it replaces
    (largest saving first) and stays within ``max_pixels``; regions are merged and renumbered."""
    small = [t for t in plan.tiles if not t.refine]
    if len(small) < 2 or max_pixels <= 0:
        return plan
    win = np.array([_bound(t.window) for t in small], np.int64)
    core = np.array([_bound(t.core) for t in small], np.int64)
    groups = [[t.region] for t in small]
    alive = np.ones(len(small), bool)

    def cost(a: np.ndarray) -> np.ndarray:
        hh = np.maximum(a[..., 1] - a[..., 0], MIN_SIDE)
        ww = np.maximum(a[..., 3] - a[..., 2], MIN_SIDE)
        return (hh + (-hh) % ALIGN) * (ww + (-ww) % ALIGN)

    while alive.sum() > 1:
        idx = np.flatnonzero(alive)
        w = win[idx]
        u = np.stack(
            [
                np.minimum(w[:, None, 0], w[None, :, 0]),
                np.maximum(w[:, None, 1], w[None, :, 1]),
                np.minimum(w[:, None, 2], w[None, :, 2]),
                np.maximum(w[:, None, 3], w[None, :, 3]),
            ],
            axis=-1,
        )
        c = cost(w)
        uc = cost(u)
        saving = c[:, None] + c[None, :] - uc
        ok = (saving >= 0) & (uc <= max_pixels)
        np.fill_diagonal(ok, False)
        if not ok.any():
            break
        saving = np.where(ok, saving, -1)
        i, j = np.unravel_index(int(np.argmax(saving)), saving.shape)
        a, b = int(idx[i]), int(idx[j])
        win[a] = u[i, j]
        core[a] = (min(core[a, 0], core[b, 0]), max(core[a, 1], core[b, 1]),
                   min(core[a, 2], core[b, 2]), max(core[a, 3], core[b, 3]))
        groups[a] += groups[b]
        alive[b] = False
    if alive.all():
        return plan

    # renumber: merged small regions first-come, big regions keep their tiles
    lut = np.full(len(plan.regions) + 1, -1, np.int32)  # last entry: cell_region == -1
    regions: list[Region] = []
    tiles: list[Tile] = []
    for k in np.flatnonzero(alive):
        n = len(regions)
        lut[groups[k]] = n
        regions.append(Region(n, Rect(*map(int, core[k])), big=False))
        tiles.append(Tile(n, Rect(*map(int, win[k])), regions[-1].bbox, refine=False))
    for r in plan.regions:
        if r.big:
            n = len(regions)
            lut[r.index] = n
            regions.append(Region(n, r.bbox, big=True))
            tiles += [Tile(n, t.window, t.core, True, t.ramps) for t in plan.tiles if t.region == r.index]
    cell_region = lut[plan.cell_region]
    info = {**plan.info, "merged": len(small) - int(alive.sum())}
    return Plan(plan.shape, regions, tiles, cell_region, plan.tile, plan.overlap, plan.margin, info)


def full_frame_plan(plan: Plan, hole: np.ndarray) -> Plan:
    """One tile over the whole frame owning every hole pixel: the same computation as
    ``mode="full"`` (the engine on the whole image), known pixels composited back."""
    h, w = plan.shape
    rows, cols = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
    bbox = Rect(int(rows[0]), int(rows[-1] + 1), int(cols[0]), int(cols[-1] + 1))
    cell_region = np.where(plan.cell_region >= 0, 0, -1).astype(np.int32)
    assert cell_region.shape == (-(-h // CELL), -(-w // CELL))
    info = {**plan.info, "full_frame": True}
    return Plan(
        plan.shape,
        [Region(0, bbox, big=False)],
        [Tile(0, Rect(0, h, 0, w), bbox, refine=False)],
        cell_region,
        plan.tile,
        plan.overlap,
        plan.margin,
        info,
    )


def choose_plan(plan: Plan, hole: np.ndarray, coarse_size: int, full_max_pixels: int) -> Plan:
    """Apply the cost model (module docstring): merge tiles, or one full-frame pass when cheaper.
    ``plan.info`` records ``tiled_cost``, ``full_cost`` and the choice."""
    before = plan_cost(plan, coarse_size)
    plan = merge_small_tiles(plan, full_max_pixels)
    cost, full = plan_cost(plan, coarse_size), frame_cost(plan.shape)
    info = {"unmerged_cost": before, "tiled_cost": cost, "full_cost": full}
    if plan.tiles and cost >= full and plan.shape[0] * plan.shape[1] <= full_max_pixels:
        plan = full_frame_plan(plan, hole)
    plan.info.update(info, tiles=len(plan.tiles), tile_pixels=int(sum(t.window.area for t in plan.tiles)))
    plan.info.setdefault("full_frame", False)
    return plan
