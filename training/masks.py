"""Inpainting masks: GLaMa's seven NTIRE 2022 types, LaMa's training masks and "unseen" mixes.

Every generator is a class whose instances are called as ``gen(h, w, rng) -> mask``: ``mask`` is a
float32 ``(h, w)`` array with values {0, 1}, **1 = hole**, drawn only from the
``np.random.Generator`` passed in (same rng state -> same mask), for any ``h, w >= 8``.

Types (``MASK_TYPES``, GLaMa's "General Mask" set, NTIRE 2022 Track 1 definitions):
  completion        a band on one side (top/bottom/left/right), ratio ~ U(0.2, 0.8) of that side
  expand            all hole except the central square [h//2-s, h//2+s) x [w//2-s, w//2+s),
                    s = (min(h, w) // k) // 2, k in {4, 3, 2}
  every_n_lines     rows or columns 0, n, 2n, ... are holes, n in {2, 3, 4, 5}
  nearest_neighbor  only pixels [::s, ::s] are known, s in {2, 3, 4}
  thin/medium/thick LaMa's evaluation stroke generators (irregular strokes, or with LaMa's mixing
                    weights 1 : 0.3 a few boxes); a draw covering more than 50% is redrawn.
Others (``EXTRA_TYPES``): ``lama_irregular`` / ``lama_box`` (LaMa's training masks),
``rectangles`` (1-3 boxes of arbitrary aspect ratio) and the ``unseen_*`` mixes (GLaMa sec. 4.5:
unions of the seven types and rectangles).

Resolution: completion, expand, every_n_lines and nearest_neighbor are defined relative to the image
(ratios of the side) or per pixel (n, s) and apply as is at any size. The stroke presets exist at
256 and 512 (LaMa's ``random_{thin,medium,thick}_{256,512}.yaml``); for a mask whose short side is
``S`` (see :func:`stroke_params`): S <= 256 uses the 256 preset with every pixel length (stroke
length/width incl. LaMa's +10/+5 offsets, box sides, margin) times S/256; 256 < S < 512 interpolates
every field linearly between the two presets; S >= 512 uses the 512 preset with lengths times S/512.
Stroke/box counts are never scaled (only interpolated). LaMa's training masks have one preset (256).

Policies: :class:`MaskPolicy` draws a type with given probabilities; :func:`make_policy` knows
"general" (uniform over the seven), "lama" (irregular/box 50/50), "lama-plus" (lama_irregular,
lama_box, nearest_neighbor, every_n_lines, 1/4 each) and "unseen" (uniform over the mixes).

CLI: ``python -m training.masks --out DIR --size 256 --per-type 100`` writes a fixed evaluation set
``DIR/<type>/<index:04d>.png`` (0/255) + ``DIR/manifest.json``; :func:`training.mask_sets.load_mask_set` reads it back.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from training.strokes import StrokeParams, draw_boxes, draw_irregular, stroke_params

MIN_SIZE = 8
MAX_TRIES = 1000


def _check_args(h: int, w: int, rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"mask size {h}x{w} is too small: need at least {MIN_SIZE}x{MIN_SIZE}")


class MaskGenerator:
    """Base class: subclasses implement ``_draw`` (uint8 {0,1} mask, or None to reject and redraw)."""

    name: ClassVar[str] = ""

    def __call__(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        h, w = int(h), int(w)
        _check_args(h, w, rng)
        for _ in range(MAX_TRIES):
            m = self._draw(h, w, rng)
            if m is not None:
                return m.astype(np.float32)
        raise RuntimeError(f"{self.name}: no acceptable mask in {MAX_TRIES} draws at {h}x{w}")

    def _draw(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------- geometric types


class Completion(MaskGenerator):
    """A band on one side is a hole; its depth is ``int(side * ratio)``, ratio ~ U(0.2, 0.8)."""

    name = "completion"

    def __init__(self, ratio: tuple[float, float] = (0.2, 0.8),
                 sides: Sequence[str] = ("top", "bottom", "left", "right")):
        bad = set(sides) - {"top", "bottom", "left", "right"}
        if bad or not sides:
            raise ValueError(f"completion: bad sides {sorted(bad) or sides}")
        self.ratio, self.sides = ratio, tuple(sides)

    def _draw(self, h, w, rng):
        r = rng.uniform(*self.ratio)
        side = self.sides[int(rng.integers(len(self.sides)))]
        dim = h if side in ("top", "bottom") else w
        k = min(max(int(dim * r), 1), dim - 1)
        m = np.zeros((h, w), np.uint8)
        if side == "top":
            m[:k] = 1
        elif side == "bottom":
            m[h - k:] = 1
        elif side == "left":
            m[:, :k] = 1
        else:
            m[:, w - k:] = 1
        return m


class Expand(MaskGenerator):
    """Everything is a hole except the central square of side 2s, s = (min(h, w) // k) // 2."""

    name = "expand"

    def __init__(self, divisors: Sequence[int] = (4, 3, 2)):
        self.divisors = tuple(divisors)

    def _draw(self, h, w, rng):
        k = self.divisors[int(rng.integers(len(self.divisors)))]
        s = max(1, (min(h, w) // k) // 2)
        m = np.ones((h, w), np.uint8)
        m[h // 2 - s:h // 2 + s, w // 2 - s:w // 2 + s] = 0
        return m


class EveryNLines(MaskGenerator):
    """Rows (or columns) 0, n, 2n, ... are holes."""

    name = "every_n_lines"

    def __init__(self, ns: Sequence[int] = (2, 3, 4, 5), axes: Sequence[str] = ("rows", "cols")):
        if set(axes) - {"rows", "cols"} or not axes:
            raise ValueError(f"every_n_lines: axes must be 'rows' and/or 'cols', got {axes}")
        self.ns, self.axes = tuple(ns), tuple(axes)

    def _draw(self, h, w, rng):
        n = self.ns[int(rng.integers(len(self.ns)))]
        axis = self.axes[int(rng.integers(len(self.axes)))]
        m = np.zeros((h, w), np.uint8)
        if axis == "rows":
            m[::n] = 1
        else:
            m[:, ::n] = 1
        return m


class NearestNeighbor(MaskGenerator):
    """Only the pixels ``[::s, ::s]`` are known (a nearest-neighbour upsampling grid)."""

    name = "nearest_neighbor"

    def __init__(self, scales: Sequence[int] = (2, 3, 4)):
        self.scales = tuple(scales)

    def _draw(self, h, w, rng):
        s = self.scales[int(rng.integers(len(self.scales)))]
        m = np.ones((h, w), np.uint8)
        m[::s, ::s] = 0
        return m


# --------------------------------------------------------------------------- LaMa strokes / boxes
# (parameters and drawing in training/strokes.py)


class StrokeMask(MaskGenerator):
    """LaMa stroke/box masks from ``STROKE_PRESETS[kind]`` scaled to the mask size.

    ``params`` fixes the parameters regardless of size. Draws that are empty or cover more than
    ``max_hole`` of the image are redrawn.
    """

    kind: ClassVar[str] = ""
    max_hole: ClassVar[float] = 0.5

    def __init__(self, params: StrokeParams | None = None):
        self.params = params

    def params_for(self, h: int, w: int) -> StrokeParams:
        return self.params or stroke_params(self.kind, min(h, w))

    def _draw(self, h, w, rng):
        p = self.params_for(h, w)
        if p.box_prob > 0 and rng.random() < p.box_prob:
            m = draw_boxes(h, w, rng, p)
        else:
            m = draw_irregular(h, w, rng, p)
        frac = m.mean()
        return m if 0 < frac <= self.max_hole else None


class ThinStrokes(StrokeMask):
    name = kind = "thin"


class MediumStrokes(StrokeMask):
    name = kind = "medium"


class ThickStrokes(StrokeMask):
    name = kind = "thick"


class LamaIrregular(StrokeMask):
    """LaMa training: 1-5 wide strokes (no area limit, as in LaMa)."""

    name = kind = "lama_irregular"
    max_hole = 1.0


class LamaBoxes(StrokeMask):
    """LaMa training: 1-4 boxes, sides 30..150 at 256, margin 10 (no area limit, as in LaMa)."""

    name = kind = "lama_box"
    max_hole = 1.0


# --------------------------------------------------------------------------- unseen mixes


class Rectangles(MaskGenerator):
    """1-3 axis-aligned rectangles of arbitrary aspect ratio: each side ~ U(0.05, 0.7) x image side."""

    name = "rectangles"

    def __init__(self, times: tuple[int, int] = (1, 3), side: tuple[float, float] = (0.05, 0.7)):
        self.times, self.side = times, side

    def _draw(self, h, w, rng):
        m = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(self.times[0], self.times[1] + 1))):
            bh = max(1, round(rng.uniform(*self.side) * h))
            bw = max(1, round(rng.uniform(*self.side) * w))
            y, x = int(rng.integers(h - bh + 1)), int(rng.integers(w - bw + 1))
            m[y:y + bh, x:x + bw] = 1
        return m


class UnseenMix(MaskGenerator):
    """Union of the masks of ``parts()`` (GLaMa sec. 4.5: the seven types combined with rectangles).

    A draw is redrawn unless at least ``min_known`` of the image stays known and every part hides at
    least ``min_gain`` of what the other parts leave known (so the result is a real combination).
    """

    min_known: ClassVar[float] = 0.03
    min_gain: ClassVar[float] = 0.05

    def __init__(self) -> None:
        self._gens = self.parts()

    def parts(self) -> tuple[MaskGenerator, ...]:
        raise NotImplementedError

    def _draw(self, h, w, rng):
        ms = [g(h, w, rng) > 0 for g in self._gens]
        union = np.logical_or.reduce(ms)
        if 1.0 - union.mean() < self.min_known:
            return None
        for i, m in enumerate(ms):
            others_known = ~np.logical_or.reduce([o for j, o in enumerate(ms) if j != i])
            if (m & others_known).sum() < self.min_gain * others_known.sum():
                return None
        return union.astype(np.uint8)


class UnseenLinesRect(UnseenMix):
    name = "unseen_lines_rect"

    def parts(self):
        return EveryNLines(), Rectangles()


class UnseenNNRect(UnseenMix):
    name = "unseen_nn_rect"

    def parts(self):
        return NearestNeighbor(), Rectangles()


class UnseenCompletionRect(UnseenMix):
    name = "unseen_completion_rect"

    def parts(self):
        return Completion(), Rectangles()


class UnseenExpandRect(UnseenMix):
    name = "unseen_expand_rect"

    def parts(self):
        return Expand(), Rectangles()


class UnseenThinRect(UnseenMix):
    name = "unseen_thin_rect"

    def parts(self):
        return ThinStrokes(), Rectangles()


class UnseenGrid(UnseenMix):
    """Every-N rows and every-M columns together (a grid)."""

    name = "unseen_grid"

    def parts(self):
        return EveryNLines(axes=("rows",)), EveryNLines(axes=("cols",))


# --------------------------------------------------------------------------- registry & policies

MASK_TYPES: dict[str, type[MaskGenerator]] = {c.name: c for c in (
    Completion, Expand, EveryNLines, NearestNeighbor, ThinStrokes, MediumStrokes, ThickStrokes)}
UNSEEN_TYPES: dict[str, type[MaskGenerator]] = {c.name: c for c in (
    UnseenLinesRect, UnseenNNRect, UnseenCompletionRect, UnseenExpandRect, UnseenThinRect, UnseenGrid)}
EXTRA_TYPES: dict[str, type[MaskGenerator]] = {
    "lama_irregular": LamaIrregular, "lama_box": LamaBoxes, "rectangles": Rectangles, **UNSEEN_TYPES}
ALL_TYPES: dict[str, type[MaskGenerator]] = {**MASK_TYPES, **EXTRA_TYPES}

POLICIES: dict[str, dict[str, float]] = {
    "general": {t: 1.0 for t in MASK_TYPES},
    "lama": {"lama_irregular": 0.5, "lama_box": 0.5},
    "lama-plus": {"lama_irregular": 0.25, "lama_box": 0.25, "nearest_neighbor": 0.25, "every_n_lines": 0.25},
    "unseen": {t: 1.0 for t in UNSEEN_TYPES},
}


def _unknown(name: str) -> ValueError:
    return ValueError(f"unknown mask type {name!r}; known types: {', '.join(ALL_TYPES)}; "
                      f"policies: {', '.join(POLICIES)}")


class MaskPolicy:
    """Draws a mask type with the given (unnormalized) probabilities, then a mask of that type."""

    def __init__(self, probs: Mapping[str, float]):
        for name, p in probs.items():
            if name not in ALL_TYPES:
                raise _unknown(name)
            if not (isinstance(p, (int, float)) and math.isfinite(p) and p >= 0):
                raise ValueError(f"mask policy: probability of {name!r} must be a finite number >= 0, got {p!r}")
        kept = {n: float(p) for n, p in probs.items() if p > 0}
        if not kept:
            raise ValueError(f"mask policy: no type with a positive probability in {dict(probs)}")
        total = sum(kept.values())
        self.names: tuple[str, ...] = tuple(kept)
        self.probs: tuple[float, ...] = tuple(p / total for p in kept.values())
        self._cum = np.cumsum(self.probs)
        self.generators = {n: ALL_TYPES[n]() for n in self.names}

    def sample_type(self, rng: np.random.Generator) -> str:
        """Draw a type name (one uniform number from ``rng``)."""
        i = int(np.searchsorted(self._cum, rng.random() * self._cum[-1], side="right"))
        return self.names[min(i, len(self.names) - 1)]

    def __call__(self, h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        name = self.sample_type(rng)
        return self.generators[name](h, w, rng), name

    def __repr__(self) -> str:
        return "MaskPolicy({" + ", ".join(f"{n!r}: {p:.4g}" for n, p in zip(self.names, self.probs, strict=True)) + "})"


def make_policy(spec: str | Mapping[str, float]) -> MaskPolicy:
    """A policy by name ("general", "lama", "lama-plus", "unseen"), single type name, or {type: prob}."""
    if isinstance(spec, Mapping):
        return MaskPolicy(spec)
    if spec in POLICIES:
        return MaskPolicy(POLICIES[spec])
    if spec in ALL_TYPES:
        return MaskPolicy({spec: 1.0})
    raise _unknown(spec)


def resolve_types(names: Iterable[str]) -> list[str]:
    """Expand policy names (e.g. "general", "unseen") to their types; keep order, drop duplicates."""
    out: list[str] = []
    for n in names:
        if n in ALL_TYPES:
            group = [n]
        elif n in POLICIES:
            group = list(POLICIES[n])
        else:
            raise _unknown(n)
        out += [t for t in group if t not in out]
    return out


# --------------------------------------------------------------------------- CLI


def _parse_size(s: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in s.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with sides >= {MIN_SIZE}, got {s!r}")
    return parts[0], parts[1]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.masks",
        description="Write a fixed, seeded evaluation mask set: DIR/<type>/<index>.png (255 = hole) "
                    "+ DIR/manifest.json. Types: " + ", ".join(ALL_TYPES) + "; or a policy name ("
                    + ", ".join(POLICIES) + ") for its types.")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--size", type=_parse_size, default=(256, 256), help="N or HxW (default 256)")
    ap.add_argument("--per-type", type=int, default=100, help="masks per type (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the set (default 0)")
    ap.add_argument("--types", nargs="+", default=list(MASK_TYPES),
                    help="mask types or policy names (default: the seven GLaMa types)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = ap.parse_args(argv)
    try:
        types = resolve_types(args.types)
    except ValueError as e:
        ap.error(str(e))
    if args.per_type < 1:
        ap.error(f"--per-type must be >= 1, got {args.per_type}")
    from training.mask_sets import MANIFEST, write_mask_set

    try:
        man = write_mask_set(args.out, args.size, args.per_type, args.seed, types, progress=not args.json)
    except OSError as e:
        print(f"error: cannot write mask set to {args.out}: {e}", file=sys.stderr)
        return 2
    summary = {k: man[k] for k in ("types", "size", "seed", "count")}
    summary.update(out=str(args.out), manifest=str(args.out / MANIFEST))
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {len(types) * args.per_type} masks ({args.per_type} x {len(types)} types, "
              f"{args.size[0]}x{args.size[1]}, seed {args.seed}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
