"""Mask generators (training/masks.py): geometry of each type, reproducibility, policies, mask sets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.mask_sets import MaskSetError, load_mask_set, mask_rng, read_manifest
from training.masks import (
    ALL_TYPES,
    MASK_TYPES,
    POLICIES,
    UNSEEN_TYPES,
    Completion,
    EveryNLines,
    Expand,
    LamaBoxes,
    MaskPolicy,
    NearestNeighbor,
    main,
    make_policy,
    stroke_params,
)
from training.strokes import STROKE_PRESETS

REPO = Path(__file__).resolve().parents[1]
ODD = [(250, 333), (333, 250), (17, 40)]


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_mask_types_names():
    assert list(MASK_TYPES) == ["completion", "expand", "every_n_lines", "nearest_neighbor",
                                "thin", "medium", "thick"]


@pytest.mark.parametrize("h,w", [(240, 240), (250, 333)])
@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_every_n_lines_fraction(n, h, w):
    rows = EveryNLines(ns=(n,), axes=("rows",))(h, w, rng(0))
    cols = EveryNLines(ns=(n,), axes=("cols",))(h, w, rng(0))
    # lines 0, n, 2n, ... are holes: ceil(size / n) of them, exactly 1/n when n divides the size
    assert rows.sum() == -(-h // n) * w and cols.sum() == -(-w // n) * h
    if h % n == 0:
        assert rows.mean() == 1 / n
    assert np.array_equal(rows.all(axis=1), np.arange(h) % n == 0) and np.array_equal(rows.any(axis=1),
                                                                                      rows.all(axis=1))
    assert np.array_equal(cols.all(axis=0), np.arange(w) % n == 0) and np.array_equal(cols.any(axis=0),
                                                                                      cols.all(axis=0))


def test_every_n_lines_draws_all_variants():
    seen = set()
    g = EveryNLines()
    for s in range(200):
        m = g(60, 60, rng(s))
        axis = "rows" if m[0].all() else "cols"  # row 0 (or column 0) is always a hole line
        prof = m[:, 0] if axis == "rows" else m[0]
        n = int(np.flatnonzero(prof)[1])
        expected = np.zeros((60, 60), np.float32)
        if axis == "rows":
            expected[::n] = 1
        else:
            expected[:, ::n] = 1
        assert np.array_equal(m, expected)
        seen.add((axis, n))
    assert seen == {(a, n) for a in ("rows", "cols") for n in (2, 3, 4, 5)}


@pytest.mark.parametrize("h,w", [(64, 64), (250, 333), (333, 250)])
def test_nearest_neighbor_grid(h, w):
    scales = set()
    for s in range(60):
        m = NearestNeighbor()(h, w, rng(s))
        known = np.argwhere(m == 0)
        step = int(known[known[:, 0] == 0][1, 1])  # second known pixel of row 0
        expected = np.ones((h, w), np.float32)
        expected[::step, ::step] = 0
        assert np.array_equal(m, expected)
        scales.add(step)
    assert scales == {2, 3, 4}


@pytest.mark.parametrize("h,w", [(256, 256), (250, 333)])
def test_completion_band(h, w):
    sides, ratios = set(), []
    for s in range(200):
        m = Completion()(h, w, rng(s)).astype(bool)
        rows, cols = m.any(axis=1), m.any(axis=0)
        if m[rows].all() and rows.sum() < h:  # a band of full rows
            k, dim = int(rows.sum()), h
            side = "top" if rows[:k].all() else "bottom"
            assert rows[:k].all() or rows[h - k:].all()
        else:  # a band of full columns
            assert m[:, cols].all() and cols.sum() < w
            k, dim = int(cols.sum()), w
            side = "left" if cols[:k].all() else "right"
            assert cols[:k].all() or cols[w - k:].all()
        assert m.sum() == k * (w if dim == h else h)
        ratio = k / dim
        assert 0.2 - 1 / dim <= ratio <= 0.8
        sides.add(side)
        ratios.append(ratio)
    assert sides == {"top", "bottom", "left", "right"}
    assert min(ratios) < 0.25 and max(ratios) > 0.75


@pytest.mark.parametrize("h,w", [(256, 256), (250, 333), (333, 250)])
def test_expand_central_square(h, w):
    sides = set()
    for s in range(60):
        m = Expand()(h, w, rng(s))
        ys, xs = np.nonzero(m == 0)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        assert (m[y0:y1, x0:x1] == 0).all() and m.sum() == h * w - (y1 - y0) * (x1 - x0)
        side = y1 - y0
        assert x1 - x0 == side
        assert side in {2 * ((min(h, w) // k) // 2) for k in (4, 3, 2)}
        assert (y0, x0) == (h // 2 - side // 2, w // 2 - side // 2)
        sides.add(side)
    assert len(sides) == 3


@pytest.mark.parametrize("name", ["thin", "medium", "thick"])
def test_strokes_coverage(name):
    gen = MASK_TYPES[name]()
    raw_over = 0
    for (h, w), n in [((256, 256), 40), ((512, 512), 10), ((250, 333), 15), ((64, 96), 15)]:
        for s in range(n):
            m = gen(h, w, rng(s))
            assert 0 < m.mean() <= 0.5
            raw = gen._draw(h, w, rng(s))
            raw_over += raw is None  # _draw returns None for a rejected (> 50% or empty) draw
    if name == "thin":  # thin at 256 with up to 50 strokes often covers more than half: rejection matters
        assert raw_over > 0


def test_stroke_rejection_threshold():
    # thick strokes at 256 without the 50% limit exceed it sometimes; with the limit never
    from training.strokes import draw_irregular

    p = stroke_params("thick", 256)
    fracs = [draw_irregular(256, 256, rng(s), p).mean() for s in range(200)]
    assert max(fracs) > 0.5
    assert all(0 < MASK_TYPES["thick"]()(256, 256, rng(s)).mean() <= 0.5 for s in range(200))


def test_stroke_params_scaling():
    for kind, presets in STROKE_PRESETS.items():
        for size, p in presets.items():
            assert stroke_params(kind, size) == p
    t256, t512 = STROKE_PRESETS["thick"][256], STROKE_PRESETS["thick"][512]
    big, small, mid = stroke_params("thick", 1024), stroke_params("thick", 128), stroke_params("thick", 384)
    assert (big.max_width, big.max_len, big.box_max, big.base_width) == (500, 900, 600, 10)
    assert (big.min_times, big.max_times, big.box_max_times) == (1, 5, 4)  # counts are not scaled
    assert (small.max_width, small.max_len, small.box_margin, small.box_max) == (50, 100, 5, 75)
    assert t256.max_width < mid.max_width < t512.max_width and t256.max_len < mid.max_len < t512.max_len
    assert stroke_params("thin", 384).max_times == 60


def test_lama_boxes_within_margin():
    for s in range(50):
        m = LamaBoxes()(256, 256, rng(s))
        ys, xs = np.nonzero(m)
        assert len(ys) and ys.min() >= 10 and xs.min() >= 10 and ys.max() < 246 and xs.max() < 246


def test_unseen_mixes_are_combinations():
    for s in range(30):
        g = UNSEEN_TYPES["unseen_grid"]()(120, 90, rng(s))
        assert g.all(axis=1).any() and g.all(axis=0).any()  # full hole rows and full hole columns
        m = UNSEEN_TYPES["unseen_nn_rect"]()(120, 90, rng(s))
        known = np.argwhere(m == 0)
        grids = [k for k in (2, 3, 4) if (known % k == 0).all()]
        assert grids, "known pixels must lie on a nearest-neighbour grid"
        assert m[::max(grids), ::max(grids)].any(), "a rectangle must hide part of the grid"
    for name, cls in UNSEEN_TYPES.items():
        for s in range(10):
            m = cls()(128, 128, rng(s))
            assert 0 < m.mean() <= 0.97, name


@pytest.mark.parametrize("name", list(ALL_TYPES))
def test_reproducible_and_any_size(name):
    gen = ALL_TYPES[name]()
    for h, w in ODD + [(8, 8)]:
        m = gen(h, w, rng(3))
        assert m.shape == (h, w) and m.dtype == np.float32
        assert set(np.unique(m)) == {0.0, 1.0}, f"{name} at {h}x{w}: needs holes and known pixels"
        assert np.array_equal(m, gen(h, w, rng(3)))
    distinct = {gen(64, 80, rng(s)).tobytes() for s in range(10)}
    assert len(distinct) > 1
    if name not in ("expand", "nearest_neighbor", "every_n_lines", "completion", "unseen_grid"):
        # (those have few possible outcomes at 64x80; the rest must all differ)
        assert len(distinct) == 10


def _chi2(counts: dict[str, int], probs: dict[str, float]) -> float:
    n = sum(counts.values())
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in probs.items())


def test_policy_frequencies():
    r = rng(1234)
    pol = make_policy("general")
    counts: dict[str, int] = {}
    for _ in range(7000):
        t = pol.sample_type(r)
        counts[t] = counts.get(t, 0) + 1
    assert _chi2(counts, {t: 1 / 7 for t in MASK_TYPES}) < 22.46  # chi2(6) at p = 0.001

    probs = {"thin": 0.7, "completion": 0.2, "expand": 0.1}
    pol = MaskPolicy({"thin": 7, "completion": 2, "expand": 1})  # normalized
    assert dict(zip(pol.names, pol.probs, strict=True)) == pytest.approx(probs)
    counts = {}
    for _ in range(600):
        m, t = pol(32, 48, r)
        assert m.shape == (32, 48) and t in probs
        if t == "completion":
            assert m.all(axis=0).any() or m.all(axis=1).any()
        counts[t] = counts.get(t, 0) + 1
    assert _chi2(counts, probs) < 13.82  # chi2(2) at p = 0.001


def test_make_policy_variants():
    assert make_policy("general").names == tuple(MASK_TYPES)
    assert set(make_policy("lama").names) == {"lama_irregular", "lama_box"}
    assert set(make_policy("lama-plus").names) == {"lama_irregular", "lama_box", "nearest_neighbor",
                                                   "every_n_lines"}
    assert set(make_policy("unseen").names) == set(UNSEEN_TYPES) and set(POLICIES) >= {"unseen"}
    assert make_policy("thick").names == ("thick",)
    assert make_policy({"expand": 1.0, "thin": 0.0}).names == ("expand",)
    m, t = make_policy("lama")(64, 64, rng(0))
    assert t in ("lama_irregular", "lama_box") and m.any()
    for bad in ("bogus", {"bogus": 1.0}, {"thin": -1.0}, {"thin": 0.0}, {"thin": float("nan")}):
        with pytest.raises(ValueError):
            make_policy(bad)
    with pytest.raises(ValueError, match="too small"):
        make_policy("thin")(4, 64, rng(0))


def test_cli_writes_set_and_load_reads_it(tmp_path, capsys):
    out = tmp_path / "set"
    assert main(["--out", str(out), "--size", "64x48", "--per-type", "3", "--seed", "5",
                 "--types", "thin", "completion", "unseen_grid", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["types"] == ["thin", "completion", "unseen_grid"] and summary["count"] == 3
    sets = load_mask_set(out)
    assert list(sets) == ["thin", "completion", "unseen_grid"]
    man = read_manifest(out)
    assert man["size"] == [64, 48] and man["seed"] == 5 and man["count"] == 3
    for t, paths in sets.items():
        assert [p.name for p in paths] == ["0000.png", "0001.png", "0002.png"]
        for i, p in enumerate(paths):
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert img.shape == (64, 48) and img.dtype == np.uint8 and set(np.unique(img)) <= {0, 255}
            assert np.array_equal(img == 255, ALL_TYPES[t]()(64, 48, mask_rng(5, t, i)) == 1)
    assert not list(out.rglob("*.tmp"))
    assert mask_rng(5, "thin", 0).random() != mask_rng(5, "medium", 0).random()  # a stream per type

    # same seed -> same files, whichever other types are in the set
    out2 = tmp_path / "set2"
    assert main(["--out", str(out2), "--size", "64x48", "--per-type", "2", "--seed", "5",
                 "--types", "completion", "--json"]) == 0
    for a, b in zip(load_mask_set(out2)["completion"], sets["completion"][:2], strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_cli_subprocess_default_types_and_bad_input(tmp_path):
    out = tmp_path / "s"
    r = subprocess.run([sys.executable, "-m", "training.masks", "--out", str(out), "--size", "32",
                        "--per-type", "1", "--json"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert list(load_mask_set(out)) == list(MASK_TYPES)
    r = subprocess.run([sys.executable, "-m", "training.masks", "--out", str(out), "--types", "bogus"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown mask type 'bogus'" in r.stderr


def test_load_mask_set_errors(tmp_path):
    with pytest.raises(MaskSetError, match="not found"):
        load_mask_set(tmp_path / "nope")
    with pytest.raises(MaskSetError, match="manifest.json: missing"):
        load_mask_set(tmp_path)
    out = tmp_path / "set"
    main(["--out", str(out), "--size", "32", "--per-type", "2", "--types", "expand", "--json"])
    (out / "expand" / "0001.png").unlink()
    with pytest.raises(MaskSetError, match="0001.png, which does not exist"):
        load_mask_set(out)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(MaskSetError, match="unreadable"):
        load_mask_set(out)


# ------------------------------------------------------------------ against the reference rules
# LaMa's evaluation generators (and NTIRE 2022's, which reuse them), written out from their rules
# with numpy's legacy RandomState, independent of training.masks: the generator class passes
# ``min_times + 1 + (max_times - min_times) * coef`` as max_times and the draw is
# ``randint(min_times, max_times + 1)``; boxes get ``bbox_min + 1 + (bbox_max - bbox_min) * coef`` as
# the exclusive maximum side; coef = 1 at evaluation; a mask over 50% is drawn again.

def _ref_irregular(r, h, w, min_times, max_times, max_width, max_len, max_angle=4):
    m = np.zeros((h, w), np.float32)
    cur_max_times = int(min_times + 1 + (max_times - min_times))
    for i in range(r.randint(min_times, cur_max_times + 1)):
        sx, sy = r.randint(w), r.randint(h)
        for _ in range(1 + r.randint(5)):
            angle = 0.01 + r.randint(max_angle)
            if i % 2 == 0:
                angle = 2 * np.pi - angle
            length = 10 + r.randint(max_len)
            bw = 5 + r.randint(max_width)
            ex = np.clip((sx + length * np.sin(angle)).astype(np.int32), 0, w)
            ey = np.clip((sy + length * np.cos(angle)).astype(np.int32), 0, h)
            cv2.line(m, (int(sx), int(sy)), (int(ex), int(ey)), 1.0, bw)
            sx, sy = ex, ey
    return m


def _ref_boxes(r, h, w, margin, bbox_min, bbox_max, min_times, max_times):
    m = np.zeros((h, w), np.float32)
    bbox_max = min(int(bbox_min + 1 + (bbox_max - bbox_min)), h - margin * 2, w - margin * 2)
    for _ in range(r.randint(min_times, max_times + 1)):
        bw, bh = r.randint(bbox_min, bbox_max), r.randint(bbox_min, bbox_max)
        x, y = r.randint(margin, w - margin - bw + 1), r.randint(margin, h - margin - bh + 1)
        m[y:y + bh, x:x + bw] = 1
    return m


_REF_256 = {  # LaMa's random_{thin,medium,thick}_256.yaml
    "thin": dict(irregular=dict(min_times=4, max_times=50, max_width=10, max_len=40)),
    "medium": dict(irregular=dict(min_times=4, max_times=5, max_width=50, max_len=100),
                   box=dict(margin=0, bbox_min=10, bbox_max=50, min_times=1, max_times=5)),
    "thick": dict(irregular=dict(min_times=1, max_times=5, max_width=100, max_len=200),
                  box=dict(margin=10, bbox_min=30, bbox_max=150, min_times=1, max_times=3)),
}


def _ref_mask(kind, r, h=256, w=256):
    cfg = _REF_256[kind]
    while True:  # MixedMaskGenerator: irregular weight 1, box 0.3
        if "box" in cfg and r.rand() < 0.3 / 1.3:
            m = _ref_boxes(r, h, w, **cfg["box"])
        else:
            m = _ref_irregular(r, h, w, **cfg["irregular"])
        if 0 < m.mean() <= 0.5:
            return m


@pytest.mark.parametrize("kind", ["medium", "thick"])  # thin: the same rules, 4x slower to draw
def test_stroke_hole_fraction_matches_reference_rules(kind):
    """Mean hole fraction over 1500 draws equals the reference's within 3 standard errors (about
    0.014). The old off-by-one (one stroke fewer, box sides one short) gave 0.221 for medium
    against the reference's 0.234-0.239."""
    n = 1500
    ref = np.array([_ref_mask(kind, np.random.RandomState(s)).mean() for s in range(n)])
    ours = np.array([MASK_TYPES[kind]()(256, 256, rng(10_000 + s)).mean() for s in range(n)])
    se = np.sqrt(ref.var() / n + ours.var() / n)
    assert abs(ours.mean() - ref.mean()) < 3 * se, (kind, ours.mean(), ref.mean(), se)


def test_stroke_count_and_box_sides_reach_the_reference_maximum():
    """Strokes: min_times..max_times + 1 inclusive; box sides: box_min..box_max inclusive."""
    import dataclasses

    from training.strokes import draw_boxes, draw_irregular

    class Recording:  # the first integers() call of draw_irregular is the number of strokes
        def __init__(self, r):
            self.r, self.values = r, []

        def integers(self, *a, **k):
            v = self.r.integers(*a, **k)
            self.values.append(v)
            return v

    p = stroke_params("medium", 256)  # strokes 4..5 (so 4..6 drawn); boxes 10..50
    counts = set()
    for s in range(300):
        rec = Recording(rng(s))
        draw_irregular(256, 256, rec, p)
        counts.add(int(rec.values[0]))
    assert counts == set(range(p.min_times, p.max_times + 2))
    one_box = dataclasses.replace(p, box_min_times=1, box_max_times=1)
    sides = set()
    for s in range(400):
        ys, xs = np.nonzero(draw_boxes(256, 256, rng(s), one_box))
        sides |= {int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)}
    assert min(sides) == p.box_min and max(sides) == p.box_max
