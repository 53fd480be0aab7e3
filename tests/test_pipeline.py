"""Tiled and two-stage inference (glama_deploy.pipeline): geometry, exactness, seams, engines."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from glama_deploy.engines.base import BaseEngine
from glama_deploy.engines.torch_ import TorchEngine
from glama_deploy.io import InputError
from glama_deploy.model import build_generator, get_config
from glama_deploy.model.ffc import FourierUnit
from glama_deploy.pipeline import run
from glama_deploy.pipeline.tiling import CoarseFill, Rect, plan_tiles, ramp_weights, sees_hole_content

from .conftest import make_model

PHOTO = Path(__file__).parent / "data" / "highres" / "plasma-eveningglow-crop.jpg"


def photo(h: int | None = None, w: int | None = None) -> np.ndarray:
    """The test photo (512x320 crop of a 2560x1600 wallpaper) as (1,3,H,W) float32, top-left crop."""
    rgb = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert (h or 0) <= rgb.shape[0] and (w or 0) <= rgb.shape[1]
    rgb = rgb[:h, :w]
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) / 255


def hole_mask(shape: tuple[int, int], *boxes: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((1, 1, *shape), np.float32)
    for y0, y1, x0, x1 in boxes:
        m[..., y0:y1, x0:x1] = 1
    return m


def known_equal(out: np.ndarray, image: np.ndarray, mask: np.ndarray) -> bool:
    keep = np.broadcast_to(mask < 0.5, image.shape)
    return np.array_equal(out[keep], image[keep])


class TeleaEngine(BaseEngine):
    """A classical inpainter (OpenCV Telea) behind the Engine protocol: deterministic, fast, and it
    fills holes from their surroundings, so tiles that disagree would show. By default it zeroes
    the holes first, like LaMa; with ``zero_holes=False`` it lets cv2.inpaint read the pixels under
    the mask (which it does), like a refine model."""

    name = "telea"
    multiple = 1

    def __init__(self, zero_holes: bool = True):
        self.zero_holes = zero_holes

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.empty_like(image)
        if self.zero_holes:
            image = image * (1 - mask)
        for i in range(len(image)):
            u8 = np.clip(image[i].transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
            filled = cv2.inpaint(u8, (mask[i, 0] > 0.5).astype(np.uint8), 5, cv2.INPAINT_TELEA)
            out[i] = filled.transpose(2, 0, 1).astype(np.float32) / 255
        return out


class FlatEngine(BaseEngine):
    """Fills holes with the mean colour of the known pixels: instant, for geometry tests."""

    name = "flat"
    zero_holes = True

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        known = 1 - mask
        mean = (image * known).sum(axis=(2, 3), keepdims=True) / np.maximum(
            known.sum(axis=(2, 3), keepdims=True), 1
        )
        return np.broadcast_to(mean, image.shape).copy()


class Recorder:
    """Wraps an engine and records every call (inputs copied); attributes pass through."""

    def __init__(self, engine):
        self.engine = engine
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []
        self.name = f"rec-{engine.name}"

    def __getattr__(self, item):
        return getattr(self.engine, item)

    def __call__(self, image, mask):
        self.calls.append((np.array(image), np.array(mask)))
        return self.engine(image, mask)


class Forbidden:
    name = "forbidden"

    def __call__(self, image, mask):
        raise AssertionError("the engine must not be called")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core box can be ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_engine() -> TorchEngine:
    """The seeded tiny generator with its global (spectral) branch switched off exactly."""
    model = make_model("tiny")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FourierUnit):
                m.bn.weight.zero_()
                m.bn.bias.zero_()
    return TorchEngine(model)


def receptive_radius(engine: TorchEngine, size: int = 256) -> int:
    """Largest distance at which perturbing one input pixel changes the raw output (measured)."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    m = torch.zeros(1, 1, size, size)
    with torch.no_grad():
        a = engine.model(x, m)
        x[0, :, size // 2, size // 2] += 1
        b = engine.model(x, m)
    ys, xs = np.nonzero((a - b).abs().amax(dim=(0, 1)).numpy() > 0)
    return int(max(size // 2 - ys.min(), ys.max() - size // 2, size // 2 - xs.min(), xs.max() - size // 2))


# ------------------------------------------------------------------------------ exactness
def test_tiled_equals_full_frame_where_the_receptive_field_fits(local_engine):
    """Tiled == full frame (to float rounding) for a network whose receptive field fits the tile.

    A real FFC generator has a *global* receptive field: the FourierUnit is a pointwise conv in the
    frequency domain, so every output pixel depends on every input pixel and no tiling can equal
    the full frame. We switch the spectral branch off exactly by zeroing the FourierUnit's BatchNorm
    scale *and* shift, so its output is exactly 0. (Zeroing only its conv weights is not enough: BN
    then turns 0 into a constant spectrum, i.e. an impulse at pixel (0, 0) after the inverse FFT,
    which depends on absolute position.) What remains is a stack of reflect-padded convolutions with
    total stride 8 and a finite receptive field, measured here by perturbing one pixel (~82 px radius).

    The tiler puts tile origins on multiples of 8 and ends a tile that reaches the right/bottom
    image edge exactly at that edge, so the stride phase and the engine's /8 padding are those of
    the full frame. With a context margin larger than the radius plus the 7 px alignment slack, every
    hole pixel's receptive field lies inside its tile. Holes: one in the middle, one touching the
    bottom-right corner of an odd-sized image (263x397), one touching the top edge, one single pixel.
    Control: with a tile too small for the receptive field the results differ.
    """
    radius = receptive_radius(local_engine)
    assert 40 < radius < 120, radius
    margin = radius + 8 + 6
    image = photo(263, 397)
    mask = hole_mask(
        (263, 397), (120, 150, 180, 210), (240, 263, 370, 397), (0, 10, 20, 40), (200, 201, 60, 61)
    )
    plan = plan_tiles(mask[0, 0] > 0.5, 256, 32, margin)
    assert plan.info["regions"] == 4 and plan.info["big_regions"] == 0, plan.info
    assert all(t.window.y0 % 8 == 0 and t.window.x0 % 8 == 0 for t in plan.tiles)
    full = run(local_engine, image, mask, "full")
    tiled = run(local_engine, image, mask, "tiled", tile=256, overlap=32, margin=margin, full_max_pixels=0)
    assert known_equal(tiled, image, mask)
    err = float(np.abs(tiled - full).max())
    assert err <= 1e-5
    small = run(local_engine, image, mask, "tiled", tile=64, overlap=0, margin=8, full_max_pixels=0)
    assert np.abs(small - full).max() > max(20 * err, 1e-5)  # the comparison above is not vacuous


def test_known_pixels_bit_exact_and_holes_filled(tiny_model):
    image = photo(200, 360)
    mask = hole_mask((200, 360), (30, 170, 40, 300), (190, 200, 350, 360), (5, 6, 5, 6))
    engine = TorchEngine(tiny_model)
    for mode in ("tiled", "two-stage"):
        out = run(engine, image, mask, mode, tile=128, overlap=16, coarse_size=96, full_max_pixels=0)
        assert out.shape == image.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert known_equal(out, image, mask), mode
        assert not np.array_equal(out, image)


def test_empty_mask_returns_copy_without_calling_the_engine():
    image = photo(100, 130)
    mask = np.zeros((1, 1, 100, 130), np.float32)
    for mode in ("tiled", "two-stage"):
        out = run(Forbidden(), image, mask, mode)
        assert np.array_equal(out, image) and out is not image


def test_one_pixel_mask(local_engine):
    image = photo(150, 220)
    mask = hole_mask((150, 220), (77, 78, 101, 102))
    rec = Recorder(local_engine)
    tiled = run(rec, image, mask, "tiled", tile=256, overlap=32, margin=96, full_max_pixels=0)
    assert len(rec.calls) == 1 and rec.calls[0][0].shape == (1, 3, 150, 220)  # image < tile: one tile
    assert np.array_equal(tiled, run(local_engine, image, mask, "full"))
    diff = np.abs(tiled - image).max(axis=(0, 1)) > 0
    assert set(zip(*np.nonzero(diff), strict=True)) <= {(77, 101)}


def test_odd_sizes_and_holes_touching_every_border():
    """Big holes along all four borders of an odd-sized image, several tiles each."""
    h, w = 301, 509
    image = photo(h, w)
    mask = hole_mask((h, w), (0, 40, 0, w), (261, h, 0, w), (0, h, 0, 30), (0, h, 480, w))
    engine = Recorder(TeleaEngine())
    for mode in ("tiled", "two-stage"):
        engine.calls.clear()
        out = run(engine, image, mask, mode, tile=128, overlap=16, full_max_pixels=0)
        assert known_equal(out, image, mask) and np.isfinite(out).all()
        assert np.abs(out - image)[np.broadcast_to(mask > 0.5, image.shape)].mean() > 0.01
        # every engine input fits a tile (+7 px of alignment slack), but the coarse pass of tiled mode
        assert all(x.shape[2] <= 135 and x.shape[3] <= 135 for x, _ in engine.calls[1:]), mode


def test_hole_spanning_several_tiles():
    """A big hole: one coarse pass at reduced resolution, then overlapping cores covering it, whose
    blend weights sum to one on every hole pixel."""
    image = photo(320, 512)
    mask = hole_mask((320, 512), (60, 250, 40, 470))
    plan = plan_tiles(mask[0, 0] > 0.5, 192, 32, 32)
    assert plan.info["big_regions"] == 1 and plan.info["tiles"] >= 8
    wsum = np.zeros((320, 512), np.float32)
    for t in plan.tiles:
        assert t.window.contains(t.core) and t.window.h <= 192 + 7 and t.window.w <= 192 + 7
        wsum[t.core.slices()] += ramp_weights(t)
    hole = mask[0, 0] > 0.5
    assert np.allclose(wsum[hole], 1.0, atol=1e-5)
    engine = Recorder(TeleaEngine())
    out = run(engine, image, mask, "tiled", tile=192, overlap=32, margin=32, coarse_size=128, full_max_pixels=0)
    coarse = engine.calls[0][0]
    assert max(coarse.shape[2:]) <= 192 and coarse.shape[3] < 300  # hole's long side 430 -> ~128
    assert sum(len(x) for x, _ in engine.calls[1:]) == plan.info["tiles"]
    assert all(len(x) <= 4 for x, _ in engine.calls[1:])
    assert known_equal(out, image, mask)


def energy_per_line(out: np.ndarray, hole: np.ndarray, axis: int) -> np.ndarray:
    """Mean |gradient| across each line (between line i and i+1) over hole pixel pairs."""
    g = np.abs(np.diff(out[0], axis=axis + 1)).mean(axis=0)
    pair = hole[:-1] & hole[1:] if axis == 0 else hole[:, :-1] & hole[:, 1:]
    g, pair = (g, pair) if axis == 0 else (g.T, pair.T)
    with np.errstate(invalid="ignore"):
        return np.where(pair.any(axis=1), (g * pair).sum(axis=1) / np.maximum(pair.sum(axis=1), 1), np.nan)


def seam_scores(out: np.ndarray, mask: np.ndarray, plan) -> list[tuple[float, float]]:
    """Per axis: (max energy on tile-border lines / 99th percentile elsewhere, mean ratio)."""
    hole = mask[0, 0] > 0.5
    scores = []
    for axis in (0, 1):
        lines = set()
        for t in plan.tiles:
            b = plan.regions[t.region].bbox
            lo, hi, blo, bhi = (
                (t.core.y0, t.core.y1, b.y0, b.y1) if axis == 0 else (t.core.x0, t.core.x1, b.x0, b.x1)
            )
            lines |= ({lo - 1} if lo > blo else set()) | ({hi - 1} if hi < bhi else set())
        e = energy_per_line(out, hole, axis)
        border = sorted(lines)
        other = np.delete(e, border)
        scores.append(
            (
                float(np.nanmax(e[border]) / np.nanpercentile(other, 99)),
                float(np.nanmean(e[border]) / np.nanmean(other)),
            )
        )
    return scores


def test_seams_are_invisible_on_a_real_photo():
    """Gradient energy across tile borders is no higher than elsewhere in the hole, on a photo.

    Telea fills each tile from the tile's own surroundings. As a refine-style engine (it reads the
    pixels under the mask, so every tile gets the whole hole masked, coarse fill inside) each tile
    fills its part of the hole on its own and neighbouring tiles disagree; the feathered blend must
    hide that: the lines where one tile's contribution ends are as smooth as other lines inside the
    hole. Control: hard tile borders (overlap 0) produce a visible seam. As a LaMa-style engine (the
    coarse fill shown around each core) the tiles agree better still.
    """
    image = photo(320, 512)
    mask = hole_mask((320, 512), (60, 250, 40, 470))
    plan = plan_tiles(mask[0, 0] > 0.5, 192, 32, 32)
    for engine in (TeleaEngine(zero_holes=False), TeleaEngine(zero_holes=True)):
        out = run(engine, image, mask, "tiled", tile=192, overlap=32, margin=32, full_max_pixels=0)
        for peak, mean in seam_scores(out, mask, plan):
            assert peak <= 1.1 and mean <= 1.3, (engine.zero_holes, peak, mean)
    hard = run(TeleaEngine(zero_holes=False), image, mask, "tiled", tile=192, overlap=0, margin=32, full_max_pixels=0)
    assert max(p for p, _ in seam_scores(hard, mask, plan_tiles(mask[0, 0] > 0.5, 192, 0, 32))) > 3


# ------------------------------------------------------------------------------ geometry
def test_distant_holes_get_their_own_tiles_and_near_holes_share_one():
    h, w = 3000, 4000
    hole = np.zeros((h, w), bool)
    hole[10:20, 10:20] = True
    hole[2950:2990, 3900:3990] = True
    plan = plan_tiles(hole, 512, 64)
    assert plan.info["regions"] == 2 and plan.info["tiles"] == 2
    assert plan.info["tile_pixels"] <= 2 * 519 * 519
    hole[100:110, 200:210] = True  # 180 px from the first: packed into its tile
    hole[1500:1501, 2000:2001] = True
    plan2 = plan_tiles(hole, 512, 64)
    assert plan2.info["regions"] == 3 and plan2.info["tiles"] == 3
    again = plan_tiles(hole.copy(), 512, 64)
    assert [(t.window, t.core) for t in again.tiles] == [(t.window, t.core) for t in plan2.tiles]
    for t in plan2.tiles:
        assert t.window.y0 % 8 == 0 and t.window.x0 % 8 == 0 and t.window.contains(t.core)


class ConstEngine(BaseEngine):
    """Predicts 0.75 everywhere: a hole pixel not written by a tile keeps its random input value and shows."""

    name = "const"
    zero_holes = True

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.full_like(image, 0.75)


@pytest.mark.parametrize("seed", range(6))
def test_every_hole_pixel_is_written_for_random_masks(seed):
    """Random sizes (odd, narrower than a tile, tiny) and masks (speckles, strokes, blobs, border
    bands): every hole pixel gets the prediction, every known pixel keeps its value."""
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(9, 700)), int(rng.integers(9, 700))
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 30))):
        kind = rng.integers(4)
        y, x = int(rng.integers(h)), int(rng.integers(w))
        if kind == 0:
            mask[y, x] = 1
        elif kind == 1:
            cv2.line(mask, (x, y), (int(rng.integers(w)), int(rng.integers(h))), 1, int(rng.integers(1, 30)))
        elif kind == 2:
            cv2.circle(mask, (x, y), int(rng.integers(1, 200)), 1, -1)
        else:
            mask[:, : int(rng.integers(1, 20))] = 1
    image = rng.random((1, 3, h, w), dtype=np.float32)
    m = mask[None, None].astype(np.float32)
    for mode in ("tiled", "two-stage"):
        out = run(ConstEngine(), image, m, mode, tile=128, overlap=16, coarse_size=32, full_max_pixels=0)
        hole = np.broadcast_to(m > 0.5, out.shape)
        assert np.allclose(out[hole], 0.75, atol=1e-5), mode
        assert known_equal(out, image, m)


def test_memory_is_bounded_by_the_tile_batch():
    """A 2000x1200 image with a hole over most of it: no engine call sees more than batch x tile."""
    image = np.full((1, 3, 1200, 2000), 0.5, np.float32)
    image[..., ::7, :] = 0.2
    mask = hole_mask((1200, 2000), (100, 1100, 100, 1900))
    engine = Recorder(FlatEngine())
    out = run(engine, image, mask, "tiled", tile=256, overlap=32, batch_size=3, full_max_pixels=0)
    assert len(engine.calls) > 10
    for x, _ in engine.calls:
        assert x.shape[0] <= 3 and x.shape[2] <= 256 + 7 and x.shape[3] <= 256 + 7
    assert known_equal(out, image, mask)


def test_batch_size_does_not_change_the_result(tiny_model):
    image = photo(240, 400)
    mask = hole_mask((240, 400), (40, 200, 30, 370))
    engine = TorchEngine(tiny_model)
    one = run(engine, image, mask, "tiled", tile=128, overlap=16, batch_size=1, full_max_pixels=0)
    four = run(engine, image, mask, "tiled", tile=128, overlap=16, batch_size=4, full_max_pixels=0)
    assert np.abs(one - four).max() <= 1e-5


def test_nchw_batches_are_processed_per_image():
    image = np.concatenate([photo(120, 200), photo(120, 200)[..., ::-1].copy()])
    mask = np.concatenate([hole_mask((120, 200), (30, 60, 40, 90)), np.zeros((1, 1, 120, 200), np.float32)])
    out = run(TeleaEngine(), image, mask, "tiled", tile=128, overlap=16, full_max_pixels=0)
    assert np.array_equal(out[1], image[1])
    one = run(TeleaEngine(), image[:1], mask[:1], "tiled", tile=128, overlap=16, full_max_pixels=0)
    assert np.array_equal(out[:1], one)


def test_coarse_fill_sampling_matches_bilinear_resize_in_any_window():
    rng = np.random.default_rng(1)
    small = rng.random((3, 37, 53), dtype=np.float32)
    fill = CoarseFill(Rect(0, 301, 0, 517), small)
    ref = np.stack([cv2.resize(c, (517, 301), interpolation=cv2.INTER_LINEAR) for c in small])
    for win in (Rect(0, 301, 0, 517), Rect(13, 140, 250, 517), Rect(290, 301, 0, 9)):
        assert (
            np.abs(fill.sample(win) - ref[(slice(None), *win.slices())]).max() <= 1e-3
        )  # cv2: 5-bit weights


def test_bad_options_are_one_line_input_errors():
    image, mask = photo(64, 64), hole_mask((64, 64), (10, 20, 10, 20))
    for kw in (
        {"tile": 32},
        {"overlap": -1},
        {"tile": 128, "margin": 60},
        {"batch_size": 0},
        {"coarse_size": 4},
        {"tile": 100.5},
    ):
        with pytest.raises(InputError):
            run(TeleaEngine(), image, mask, "tiled", **kw)
    with pytest.raises(ValueError, match="unknown mode"):
        run(TeleaEngine(), image, mask, "tiles")
    # an overlap too large for the tile is reduced (the CLI default 64 with --tile 192), not refused
    assert known_equal(run(TeleaEngine(), image, mask, "tiled", tile=64, overlap=64), image, mask)


def test_progress_bar_counts_tiles(capsys):
    image = photo(320, 512)
    mask = hole_mask((320, 512), (60, 250, 40, 470))
    run(TeleaEngine(), image, mask, "tiled", tile=192, overlap=32, margin=32, progress=True, full_max_pixels=0)
    err = capsys.readouterr().err
    n = 1 + plan_tiles(mask[0, 0] > 0.5, 192, 32, 32).info["tiles"]  # coarse pass + tiles
    assert f"{n}/{n} [" in err and "tile/s" in err


# ------------------------------------------------------------------------------ two-stage
def test_two_stage_coarse_at_coarse_size_then_refine_sees_the_upsampled_fill(tiny_model):
    """Stage 1 runs at short side ``coarse_size``; a refine model (zero_holes=False, its own
    weights) gets the bilinear upsampling of the coarse result in the holes and the full mask."""
    image = photo(240, 400)
    mask = hole_mask((240, 400), (50, 180, 60, 330))
    torch.manual_seed(5)
    refine_model = build_generator(get_config("tiny", zero_holes=False)).eval()
    coarse, refine = Recorder(TorchEngine(tiny_model)), Recorder(TorchEngine(refine_model))
    assert not sees_hole_content(coarse) and sees_hole_content(refine)
    out = run(coarse, image, mask, "two-stage", coarse_size=96, tile=512, refine_engine=refine)
    assert len(coarse.calls) == 1 and coarse.calls[0][0].shape == (1, 3, 96, 160)
    assert len(refine.calls) == 1 and refine.calls[0][0].shape == image.shape  # fits one tile
    low = coarse.engine(*coarse.calls[0])[0]
    up = np.stack([cv2.resize(c, (400, 240), interpolation=cv2.INTER_LINEAR) for c in low])
    seen, seen_mask = refine.calls[0]
    hole = mask[0, 0] > 0.5
    assert np.array_equal(seen_mask, mask)
    assert np.abs(seen[0][:, hole] - up[:, hole]).max() <= 2e-3
    assert np.array_equal(seen[0][:, ~hole], image[0][:, ~hole])
    assert known_equal(out, image, mask)
    assert np.array_equal(
        out[np.broadcast_to(mask > 0.5, out.shape)],
        refine.engine(seen, seen_mask)[np.broadcast_to(mask > 0.5, out.shape)],
    )


def test_two_stage_refine_is_tiled_on_large_images_and_one_model_serves_both():
    """Image larger than a tile: refine runs on tiles only. With a single LaMa-style model, a core
    of a big hole is masked while the coarse fill around it is shown as context."""
    image = photo(320, 512)
    mask = hole_mask((320, 512), (60, 250, 40, 470))
    engine = Recorder(TeleaEngine())
    out = run(engine, image, mask, "two-stage", coarse_size=64, tile=192, overlap=32, margin=32, full_max_pixels=0)
    (x0, _m0), tiles = engine.calls[0], engine.calls[1:]
    assert min(x0.shape[2:]) == 64
    assert tiles and all(x.shape[2] <= 199 and x.shape[3] <= 199 for x, _ in tiles)
    plan = plan_tiles(mask[0, 0] > 0.5, 192, 32, 32)
    m = tiles[0][1][0, 0]
    t = plan.tiles[0]
    hole_in_win = mask[0, 0][t.window.slices()] > 0.5
    assert m.sum() < hole_in_win.sum()  # part of the hole is shown (coarse fill), not masked
    assert m[
        t.core.y0 - t.window.y0 : t.core.y1 - t.window.y0, t.core.x0 - t.window.x0 : t.core.x1 - t.window.x0
    ][
        hole_in_win[
            t.core.y0 - t.window.y0 : t.core.y1 - t.window.y0,
            t.core.x0 - t.window.x0 : t.core.x1 - t.window.x0,
        ]
    ].all()
    assert known_equal(out, image, mask)


def test_sees_hole_content_from_metadata_and_by_probing(tiny_onnx):
    from glama_deploy.engines.onnx_ import OnnxEngine

    assert sees_hole_content(OnnxEngine(tiny_onnx)) is False

    class Identity(BaseEngine):
        name = "identity"

        def _run(self, image, mask):
            return image

    class Blind(BaseEngine):
        name = "blind"

        def _run(self, image, mask):
            return np.full_like(image, 0.5)

    probe = Recorder(Identity())
    assert sees_hole_content(probe) is True and probe.calls[0][0].shape == (2, 3, 64, 64)
    assert sees_hole_content(probe) is True and len(probe.calls) == 1  # cached per engine
    assert sees_hole_content(Blind()) is False
    assert sees_hole_content(TeleaEngine(zero_holes=False)) is True  # attribute, no probe
    assert sees_hole_content(Forbidden()) is False  # probe failed: assume a LaMa-style model


def test_onnxruntime_matches_torch_in_tiled_and_two_stage(tiny_onnx, tiny_model):
    from glama_deploy.engines.onnx_ import OnnxEngine

    image = photo(200, 330)
    mask = hole_mask((200, 330), (20, 180, 30, 300), (195, 200, 0, 9))
    ort, ref = OnnxEngine(tiny_onnx, threads=2), TorchEngine(tiny_model)
    for mode in ("tiled", "two-stage"):
        a = run(ort, image, mask, mode, tile=128, overlap=16, coarse_size=64, full_max_pixels=0)
        b = run(ref, image, mask, mode, tile=128, overlap=16, coarse_size=64, full_max_pixels=0)
        assert known_equal(a, image, mask)
        assert np.abs(a - b).max() <= 1e-4, mode
