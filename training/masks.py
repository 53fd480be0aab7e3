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
``DIR/<type>/<index:04d>.png`` (0/255) + ``DIR/manifest.json``; :func:`load_mask_set` reads it back.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from glama_deploy.fsutil import atomic_write_bytes

MIN_SIZE = 8
MAX_TRIES = 1000
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "glama-mask-set"
MANIFEST_VERSION = 1


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


# --------------------------------------------------------------------------- evaluation mask sets


class MaskSetError(ValueError):
    """A mask-set directory is missing or inconsistent."""


def mask_rng(seed: int, type_name: str, index: int) -> np.random.Generator:
    """The rng of mask ``index`` of ``type_name`` in a set: independent of the other types chosen."""
    return np.random.default_rng([seed, zlib.crc32(type_name.encode()), index])


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def write_mask_set(out: str | os.PathLike, size: tuple[int, int], per_type: int, seed: int = 0,
                   types: Sequence[str] = tuple(MASK_TYPES), progress: bool = False) -> dict:
    """Write ``out/<type>/<index:04d>.png`` (0/255) and ``out/manifest.json``; returns the manifest.

    Mask ``i`` of type ``t`` is drawn from :func:`mask_rng` ``(seed, t, i)``. Files of an older set in
    ``out`` that the new manifest does not list are left alone (and ignored by :func:`load_mask_set`).
    """
    h, w = size
    types = resolve_types(types)
    if per_type < 1:
        raise ValueError(f"per_type must be >= 1, got {per_type}")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"mask size {h}x{w} is too small: need at least {MIN_SIZE}x{MIN_SIZE}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written set never has a manifest
    files: dict[str, list[str]] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(types) * per_type, unit="mask", desc=f"masks -> {out}")
    for t in types:
        gen = ALL_TYPES[t]()
        (out / t).mkdir(exist_ok=True)
        files[t] = []
        for i in range(per_type):
            rel = f"{t}/{i:04d}.png"
            m = gen(h, w, mask_rng(seed, t, i))
            ok, buf = cv2.imencode(".png", (m * 255).astype(np.uint8))
            if not ok:
                raise RuntimeError(f"could not encode {rel} as PNG")
            _write_atomic(out / rel, buf.tobytes())
            files[t].append(rel)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "types": types, "size": [h, w],
                "seed": seed, "count": per_type, "files": files}
    _write_atomic(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    """The validated manifest of a mask set (raises :class:`MaskSetError` with the problem)."""
    d = Path(directory)
    mf = d / MANIFEST
    if not d.is_dir():
        raise MaskSetError(f"mask set directory not found: {d}")
    if not mf.is_file():
        raise MaskSetError(f"{mf}: missing, so {d} is not a mask set "
                           f"(make one with: python -m training.masks --out {d})")
    try:
        man = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskSetError(f"{mf}: unreadable ({e})") from None
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise MaskSetError(f"{mf}: not a {MANIFEST_FORMAT} manifest")
    if man.get("version") != MANIFEST_VERSION:
        raise MaskSetError(f"{mf}: version {man.get('version')!r}, expected {MANIFEST_VERSION}")
    types, files, count = man.get("types"), man.get("files"), man.get("count")
    if not (isinstance(types, list) and isinstance(files, dict) and isinstance(count, int)
            and list(files) == types):
        raise MaskSetError(f"{mf}: 'types', 'files' and 'count' are missing or inconsistent")
    for t in types:
        rels = files[t]
        if not isinstance(rels, list) or len(rels) != count:
            raise MaskSetError(f"{mf}: type {t!r} lists {len(rels) if isinstance(rels, list) else rels!r} "
                               f"files, expected {count}")
        for rel in rels:
            p = Path(rel) if isinstance(rel, str) else None
            if p is None or p.is_absolute() or ".." in p.parts:
                raise MaskSetError(f"{mf}: bad file entry {rel!r}")
            if not (d / p).is_file():
                raise MaskSetError(f"{mf}: lists {d / p}, which does not exist")
    return man


def load_mask_set(directory: str | os.PathLike) -> dict[str, list[Path]]:
    """``{type: [mask png paths]}`` of a mask set written by :func:`write_mask_set` (manifest order)."""
    man = read_manifest(directory)
    d = Path(directory)
    return {t: [d / rel for rel in man["files"][t]] for t in man["types"]}


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
