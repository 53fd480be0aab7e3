"""training.compare: models and baselines on photos at the sizes users run, in-hole PSNR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.compare import draw_masks, main, resize_for
from training.masks import MASK_TYPES
from training.metrics import hole_psnr

DATA = Path(__file__).resolve().parent / "data"
PHOTOS = ["mate-aqua.jpg", "plasma-coldripple.jpg"]


def test_sizes_keep_the_aspect_ratio():
    img = np.zeros((600, 900, 3), np.uint8)
    assert resize_for(img, "256").shape[:2] == (256, 384)
    assert resize_for(img, 512).shape[:2] == (512, 768)
    assert resize_for(img, "full").shape[:2] == (600, 900)
    assert resize_for(np.zeros((1500, 2000, 3), np.uint8), "full").shape[:2] == (768, 1024)


def test_masks_are_the_same_for_every_model_and_differ_by_photo():
    a, b, c = draw_masks(96, 128, 0, 0, 2), draw_masks(96, 128, 0, 0, 2), draw_masks(96, 128, 0, 1, 2)
    assert list(a) == list(MASK_TYPES)
    for t in MASK_TYPES:
        assert all(np.array_equal(x, y) for x, y in zip(a[t], b[t], strict=True))
        assert all(m.shape == (96, 128) and 0 < m.mean() < 1 for m in a[t])
    assert any(not np.array_equal(a[t][0], c[t][0]) for t in MASK_TYPES)


def test_hole_psnr_counts_only_the_hole():
    gt = np.full((10, 10, 3), 0.5)
    out = gt.copy()
    mask = np.zeros((10, 10))
    mask[:5] = 1
    out[:5] += 0.1  # error 0.1 in the hole
    out[5:] += 0.0
    assert hole_psnr(out, gt, mask) == pytest.approx(20.0)
    assert hole_psnr(out.transpose(2, 0, 1), gt.transpose(2, 0, 1), mask) == pytest.approx(20.0)


def test_cli_table_with_a_model_and_baselines(tmp_path, tiny_model, capsys):
    from glama_deploy.model.weights import save_weights

    weights = save_weights(tiny_model, tmp_path / "m.safetensors", step=0, source="test")
    out = tmp_path / "rep"
    assert main(["--images", str(DATA), "--include", *PHOTOS, "--model", f"mine={weights}", "--model", "telea",
                 "--model", "pyramid", "--sizes", "64", "full", "--per-type", "1", "--out", str(out), "-q",
                 "--threads", "1"]) == 0
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["images"] == PHOTOS and rep["sizes"] == ["64", "full"]
    for size in ("64", "full"):
        assert set(rep["results"][size]) == {"mine", "OpenCV Telea", "pyramid fill alone"}
        for r in rep["results"][size].values():
            assert set(r) == set(MASK_TYPES) | {"mean"} and all(r[t]["n"] == 2 for t in MASK_TYPES)
    # interpolating one row in two is easy for the classical fills, hard for a random network
    lines = {m: r["every_n_lines"]["psnr_hole"] for m, r in rep["results"]["full"].items()}
    assert lines["pyramid fill alone"] > 25 and lines["OpenCV Telea"] > 25 and lines["mine"] < lines["OpenCV Telea"]
    md = (tmp_path / "rep.md").read_text()
    assert "short side 64" in md and "own size" in md and "| mine |" in md
    assert md in capsys.readouterr().out


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    cases = [(["--model", "telea", "--images", str(tmp_path / "none")], "none"),
             (["--model", str(tmp_path / "w.safetensors"), "--images", str(DATA)], "w.safetensors"),
             (["--model", "telea", "--images", str(DATA), "--include", "nope.jpg"], "nope.jpg"),
             (["--model", "telea", "--images", str(DATA), "--sizes", "huge"], "huge")]
    for args, needle in cases:
        assert main(args + ["--out", str(tmp_path / "r"), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "r.json").exists()
