"""The tiler's cost model (merge tiles / one full-frame pass), the coarse pass's hole rule, and
seams across an elliptical hole (glama_deploy.pipeline.cost, .scaling)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.highres import make_hole, make_scattered
from glama_deploy.pipeline import run
from glama_deploy.pipeline.cost import frame_cost, padded_area, plan_cost
from glama_deploy.pipeline.layout import Rect
from glama_deploy.pipeline.scaling import downscale
from glama_deploy.pipeline.tiling import plan_tiles
from training.masks import MASK_TYPES

from .test_pipeline import Recorder, TeleaEngine, hole_mask, known_equal, photo, seam_scores

SAMPLE = Path(__file__).resolve().parents[1] / "glama_deploy" / "assets" / "samples" / "lomiri-seeding.jpg"


def test_scattered_holes_on_a_2560x1600_frame_run_as_one_full_frame_pass():
    """The issue's case: ~17% of small holes all over the frame needed ~30 tiles (twice the
    frame's pixels); merging cannot bring that under the frame, so one full-frame pass runs."""
    hole = make_scattered(1600, 2560, 0.166) > 0
    tiles_only = plan_tiles(hole, 512, 64, full_max_pixels=0)
    assert tiles_only.info["tiles"] >= 25 and not tiles_only.info["full_frame"]
    assert plan_cost(tiles_only, 256) > 1.5 * frame_cost(hole.shape)
    plan = plan_tiles(hole, 512, 64, full_max_pixels=4096 * 4096)
    assert plan.info["full_frame"] and len(plan.tiles) == 1
    assert plan.tiles[0].window == Rect(0, 1600, 0, 2560) and plan.info["merged"] > 0
    assert plan.info["unmerged_cost"] > plan.info["tiled_cost"] >= plan.info["full_cost"]
    # the memory bound wins over the cost: below the frame's size no input exceeds it
    bound = 1_000_000
    capped = plan_tiles(hole, 512, 64, full_max_pixels=bound)
    assert not capped.info["full_frame"] and capped.info["tiles"] < tiles_only.info["tiles"]
    assert all(padded_area(t.window) <= bound for t in capped.tiles)


def test_a_compact_hole_stays_tiled():
    hole = make_hole(1600, 2560, 0.05) > 0
    plan = plan_tiles(hole, 512, 64, full_max_pixels=4096 * 4096)
    assert not plan.info["full_frame"] and plan.info["tiles"] == 4
    assert plan.info["tiled_cost"] < frame_cost(hole.shape) / 4


def test_overlapping_windows_merge_into_one_engine_call():
    """Two holes too far apart to share a tile, whose 256 px windows overlap: the union window is
    cheaper than the two, so the engine is called once on it and both holes are filled from it."""
    image = photo(320, 512)
    mask = hole_mask((320, 512), (100, 180, 60, 200), (100, 180, 290, 430))
    hole = mask[0, 0] > 0.5
    assert plan_tiles(hole, 256, 32, full_max_pixels=0).info["tiles"] == 2
    plan = plan_tiles(hole, 256, 32, full_max_pixels=10**9)
    assert plan.info["merged"] == 1 and not plan.info["full_frame"]
    (t,) = plan.tiles
    assert t.window.area < 2 * 256 * 256 and t.window.contains(t.core)
    engine = Recorder(TeleaEngine())
    out = run(engine, image, mask, "tiled", tile=256, overlap=32)
    assert [x.shape[2:] for x, _ in engine.calls] == [(t.window.h, t.window.w)]
    assert known_equal(out, image, mask) and (np.abs(out - image)[0][:, hole].mean() > 0.01)


@pytest.mark.parametrize("mode", ["tiled", "two-stage"])
def test_full_frame_fallback_computes_what_full_mode_computes(mode):
    """Scattered holes on a small frame: tiles would cost more than the frame, so tiled mode runs
    the engine once on the whole frame: bit-identical to mode="full" (a refine-style engine in
    two-stage mode sees the coarse fill instead, so only tiled is compared bit-exactly)."""
    image = photo(320, 512)
    mask = make_scattered(320, 512, 0.15, seed=3).astype(np.float32)[None, None]
    engine = Recorder(TeleaEngine())
    out = run(engine, image, mask, mode, tile=128, overlap=16)
    sizes = [x.shape[2:] for x, _ in engine.calls]
    assert sizes[-1] == (320, 512) and len(sizes) == (1 if mode == "tiled" else 2), sizes
    assert known_equal(out, image, mask)
    if mode == "tiled":
        assert np.array_equal(out, run(TeleaEngine(), image, mask, "full"))


def test_coarse_hole_rule_keeps_known_content_of_fine_masks():
    """1024 -> 256: the old rule ('any' hole pixel) hides Nearest-Neighbour and Every-N-Lines
    masks almost entirely, and so does 'majority' for Nearest-Neighbour (~90% of its pixels are
    holes); the default 'known' (hole only where the whole cell is) shows the model all of them.
    A known low-res pixel is the mean of its cell's *known* pixels: no hole content leaks in."""
    rng = np.random.default_rng(0)
    img = rng.random((3, 1024, 1024), dtype=np.float32)
    full, size = Rect(0, 1024, 0, 1024), (256, 256)
    for name in ("nearest_neighbor", "every_n_lines"):
        m = MASK_TYPES[name]()(1024, 1024, np.random.default_rng(1)).astype(np.float32)
        share = {r: float(downscale(img, m, full, size, r)[1].mean()) for r in ("any", "majority", "known")}
        assert share["any"] >= 0.9, (name, share)
        assert share["known"] <= 0.01 and share["known"] <= share["majority"] <= share["any"], (name, share)
        assert np.array_equal(downscale(img, m, full, size)[1], downscale(img, m, full, size, "known")[1])
        for rule in ("majority", "known"):
            a, ma = downscale(img, m, full, size, rule)
            changed = np.where(m[None] > 0, 1 - img, img)  # other content under the holes only
            b, mb = downscale(changed, m, full, size, rule)
            assert np.array_equal(ma, mb) and np.allclose(a, b, atol=1e-5), (name, rule)
    with pytest.raises(ValueError):
        downscale(img, m, full, size, "most")


def test_no_seam_across_an_elliptical_hole_spanning_tile_borders():
    """An ellipse over a real photo, cut by tile borders: across each border line inside the hole
    the fill's gradient is no larger than the 99th percentile of other lines of the fill (the mean
    over border lines within 1.5x of the mean elsewhere), for refine-style and LaMa-style engines."""
    rgb = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)[:, :, ::-1]
    rgb = cv2.resize(rgb, (512, 320), interpolation=cv2.INTER_AREA)
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255
    m = np.zeros((320, 512), np.uint8)
    cv2.ellipse(m, (250, 160), (190, 110), 15, 0, 360, 1, -1)
    mask = m.astype(np.float32)[None, None]
    plan = plan_tiles(m > 0, 192, 32, 32, full_max_pixels=0)
    assert plan.info["big_regions"] == 1 and len(plan.tiles) >= 4
    for engine in (TeleaEngine(zero_holes=False), TeleaEngine(zero_holes=True)):
        out = run(engine, image, mask, "tiled", tile=192, overlap=32, margin=32, full_max_pixels=0)
        assert known_equal(out, image, mask)
        for peak, mean in seam_scores(out, mask, plan):
            assert peak <= 1.1 and mean <= 1.5, (engine.zero_holes, peak, mean)
    # control: hard tile borders (no overlap) are seams this measure sees
    hard = run(TeleaEngine(zero_holes=False), image, mask, "tiled", tile=192, overlap=0, margin=32, full_max_pixels=0)
    assert max(p for p, _ in seam_scores(hard, mask, plan_tiles(m > 0, 192, 0, 32, full_max_pixels=0))) > 2
