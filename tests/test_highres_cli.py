"""``python -m glama_deploy.infer --mode full|tiled|two-stage`` end to end on saved images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from glama_deploy.infer import main
from glama_deploy.model import build_generator, get_config
from glama_deploy.model.weights import save_weights

PHOTO = Path(__file__).parent / "data" / "highres" / "plasma-eveningglow-crop.jpg"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def case(tmp_path: Path, tiny_model) -> dict:
    """A 320x509 PNG (lossless, so known pixels can be compared exactly), a mask with one hole
    larger than a 192 tile and one small hole at the border, generator and refine weights."""
    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)[:, :509]
    mask = np.zeros(bgr.shape[:2], np.uint8)
    mask[60:250, 40:430] = 255
    mask[300:320, 490:509] = 255
    cv2.imwrite(str(tmp_path / "photo.png"), bgr)
    cv2.imwrite(str(tmp_path / "photo_mask.png"), mask)
    torch.manual_seed(3)
    refine = build_generator(get_config("tiny", zero_holes=False)).eval()
    return {
        "image": tmp_path / "photo.png",
        "mask": tmp_path / "photo_mask.png",
        "bgr": bgr,
        "hole": mask > 0,
        "weights": save_weights(tiny_model, tmp_path / "coarse.safetensors"),
        "refine": save_weights(refine, tmp_path / "refine.safetensors"),
        "dir": tmp_path,
    }


def infer(case: dict, out: str, *extra: str) -> tuple[int, np.ndarray | None]:
    path = case["dir"] / out
    rc = main(
        [
            "--image",
            str(case["image"]),
            "--mask",
            str(case["mask"]),
            "--out",
            str(path),
            "--threads",
            "1",
            *extra,
        ]
    )
    return rc, cv2.imread(str(path), cv2.IMREAD_COLOR) if path.exists() else None


@pytest.mark.parametrize("mode,refine", [("tiled", False), ("two-stage", False), ("two-stage", True)])
def test_modes_run_end_to_end(case, capsys, mode, refine):
    extra = ["--refine-weights", str(case["refine"])] if refine else []
    rc, out = infer(
        case,
        f"{mode}-{refine}.png",
        "--weights",
        str(case["weights"]),
        "--mode",
        mode,
        "--tile",
        "192",
        "--overlap",
        "32",
        "--coarse-size",
        "128",
        "--json",
        *extra,
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["mode"] == mode and summary["count"] == 1
    assert "tile" in captured.err  # a progress bar over tiles for a single image
    assert out.shape == case["bgr"].shape
    assert np.array_equal(out[~case["hole"]], case["bgr"][~case["hole"]])
    assert np.abs(out[case["hole"]].astype(int) - case["bgr"][case["hole"]]).mean() > 1


def test_tiled_equals_full_when_the_image_fits_one_tile(case):
    args = ("--weights", str(case["weights"]), "--quiet")
    rc_full, full = infer(case, "full.png", *args, "--mode", "full")
    rc_tiled, tiled = infer(case, "tiled.png", *args, "--mode", "tiled", "--tile", "512")
    assert rc_full == rc_tiled == 0
    assert np.array_equal(full, tiled)


def test_onnxruntime_engine_from_the_cli(case, tiny_onnx):
    rc, ort = infer(
        case, "ort.png", "--weights", str(tiny_onnx), "--mode", "tiled", "--tile", "192", "--quiet"
    )
    rc_torch, ref = infer(
        case, "torch.png", "--weights", str(case["weights"]), "--mode", "tiled", "--tile", "192", "--quiet"
    )
    assert rc == rc_torch == 0
    assert np.abs(ort.astype(int) - ref).max() <= 1  # same model, 8-bit rounding


def test_bad_tile_options_exit_2_with_one_line(case, capsys):
    rc, out = infer(
        case, "bad.png", "--weights", str(case["weights"]), "--mode", "tiled", "--tile", "16", "--quiet"
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and out is None
    assert err.startswith("error: tile must be") and "\n" not in err


def test_benchmark_hole_and_one_measured_case(case):
    """benchmarks.highres: the hole covers the asked fraction; a case runs in a subprocess and
    reports time and peak memory (the 2560x1600 / 8K numbers come from running the module)."""
    from benchmarks.highres import EngineFactory, make_hole, measure_highres

    for h, w in ((1600, 2560), (301, 509)):
        assert abs(make_hole(h, w, 0.05).mean() - 0.05) < 0.004
    rows = measure_highres(
        EngineFactory("torch", str(case["weights"]), threads=1),
        PHOTO,
        ["480x300"],
        modes=("full", "tiled"),
        tile=192,
        overlap=32,
    )
    assert [(r["size"], r["mode"]) for r in rows] == [("480x300", "full"), ("480x300", "tiled")]
    for r in rows:
        assert r["ok"], r
        assert r["seconds"] > 0 and r["peak_rss_mib"] >= r["baseline_rss_mib"] > 50
        assert abs(r["hole_fraction"] - 0.05) < 0.01 and r["speedup_vs_full"] > 0


def test_benchmark_help_names_no_machine_specific_path(capsys):
    """--help shows defaults a reader can use on any machine: nothing outside the repository by
    absolute path (the shared photo folder is named relative to it)."""
    from benchmarks.highres import main as highres_main

    with pytest.raises(SystemExit):
        highres_main(["--help"])
    out = capsys.readouterr().out
    repo = str(Path(__file__).resolve().parents[1])
    outside = str(Path(repo).parent)  # the folder holding the checkout
    assert "../shared/data/highres" in out
    assert all(not w.startswith(outside + "/") or w.startswith(repo + "/") for w in out.split()), out
