"""The bundled default model on photos it never trained on (the repo's sample photos are held out of
its training): it must beat OpenCV's inpainting and show no grid or colour cast."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from glama_deploy.engines import create_engine
from training.baselines import OpenCVInpaintEngine
from training.compare import draw_masks, inpaint_u8, resize_for
from training.masks import MASK_TYPES
from training.metrics import hole_psnr

from .conftest import DEFAULT_WEIGHTS, SAMPLES

PHOTOS = ("mate-dune", "lomiri-seeding", "plasma-path")


@pytest.fixture(scope="module")
def engines():
    model = create_engine("torch", str(DEFAULT_WEIGHTS), threads=2)
    yield model, OpenCVInpaintEngine("telea")
    model.close()


def _fill(engine, rgb_u8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx3 float in [0, 1] on the 8-bit grid, as the CLI writes it."""
    return inpaint_u8(engine, rgb_u8, mask) / 255.0


def _checker(img: np.ndarray, hole: np.ndarray) -> float:
    """Mean |2x2 checkerboard response| inside the hole: what a ConvTranspose grid adds."""
    k = np.array([[1, -1], [-1, 1]], np.float32)
    r = np.abs(cv2.filter2D(img.astype(np.float32), -1, k, borderType=cv2.BORDER_REFLECT))
    return float(r[hole].mean())


def test_readme_demo_beats_telea_without_grid_or_colour_cast(engines):
    model, telea = engines
    img = cv2.imread(str(SAMPLES / "mate-dune.jpg"))[:, :, ::-1].copy()
    hole = cv2.imread(str(SAMPLES / "mate-dune_mask.png"), 0) > 0
    gt = img.astype(np.float32) / 255.0
    ours, classic = _fill(model, img, hole), _fill(telea, img, hole)
    assert hole_psnr(ours, gt, hole) > hole_psnr(classic, gt, hole)
    # colour: the old default filled both holes with a flat grey-lavender (mean BGR 135,135,138 against
    # 138,147,128). The fill keeps the truth's chroma and stays within 12 grey levels per channel of its
    # mean (it is ~10 off in blue: the box at the horizon mixes in grass where the photo has sea)
    fill_mean, true_mean = ours[hole].mean(0) * 255, gt[hole].mean(0) * 255
    assert np.abs(fill_mean - true_mean).max() < 12, (fill_mean, true_mean)
    assert np.ptp(fill_mean) > 0.7 * np.ptp(true_mean), (fill_mean, true_mean)
    assert _checker(ours, hole) < 1.2 * _checker(gt, hole)  # no grid texture beyond the photo's own


@pytest.mark.parametrize("size", [128, 512])
def test_every_fourth_row_has_no_colour_bias(engines, size):
    """Three known rows out of four: the missing row's mean colour must match (the old default was
    14-20 grey levels off per channel, at every scale)."""
    model, _ = engines
    for name in PHOTOS:
        img = resize_for(cv2.imread(str(SAMPLES / f"{name}.jpg"))[:, :, ::-1].copy(), size)
        m = np.zeros(img.shape[:2], np.float32)
        m[::4] = 1
        hole = m > 0
        bias = (_fill(model, img, m)[hole].mean(0) - img[hole].mean(0) / 255.0) * 255
        assert np.abs(bias).max() < 2, (name, size, bias)


def test_every_mask_family_beats_telea_on_held_out_samples(engines):
    """Short side 256, the seven NTIRE types, 2 masks per photo and type, in-hole PSNR over 3 photos."""
    model, telea = engines
    ours: dict[str, list[float]] = {t: [] for t in MASK_TYPES}
    classic: dict[str, list[float]] = {t: [] for t in MASK_TYPES}
    for pi, name in enumerate(PHOTOS):
        img = resize_for(cv2.imread(str(SAMPLES / f"{name}.jpg"))[:, :, ::-1].copy(), 256)
        gt = img.astype(np.float32) / 255.0
        for t, masks in draw_masks(img.shape[0], img.shape[1], 11, pi, 2).items():
            for m in masks:
                ours[t].append(hole_psnr(_fill(model, img, m), gt, m))
                classic[t].append(hole_psnr(_fill(telea, img, m), gt, m))
    gaps = {t: np.mean(ours[t]) - np.mean(classic[t]) for t in MASK_TYPES}
    assert np.mean(list(gaps.values())) > 0.5, gaps
    assert all(g > -0.5 for g in gaps.values()), gaps  # no family clearly lost on 6 pairs
    assert gaps["every_n_lines"] > 1 and gaps["nearest_neighbor"] > 1, gaps
