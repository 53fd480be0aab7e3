"""Geometry of a tiling plan: rectangles, regions, tiles, and the plan that holds them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
