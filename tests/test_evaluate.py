"""Evaluation: metrics (PSNR, SSIM, LPIPS/FID plumbing) and the per-mask-type report CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.mask_sets import write_mask_set
from training.masks import MASK_TYPES
from training.metrics import frechet_distance, psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
PHOTOS = ("lomiri-dragonfly.jpg", "mate-aqua.jpg", "mate-garden.jpg")


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------ metrics

def test_psnr_known_values():
    a = np.zeros((8, 8, 3), np.float32)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-3)
    assert psnr(a, a) == 100.0


def test_ssim_properties_and_closed_form():
    rng = np.random.default_rng(0)
    x = rng.random((48, 40, 3))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    noisier = np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1)
    assert 0 < ssim(noisier, x) < ssim(noisy, x) < 1
    assert ssim(noisy, x) == pytest.approx(ssim(x, noisy), abs=1e-12)
    # two constant images: only the luminance term remains, (2ab + C1) / (a^2 + b^2 + C1)
    c1 = 0.01**2
    a, b = np.full((32, 32), 0.3), np.full((32, 32), 0.6)
    assert ssim(a, b) == pytest.approx((2 * 0.18 + c1) / (0.09 + 0.36 + c1), rel=1e-9)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 4))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    # same covariance (identity-ish), shifted mean by 2 on one axis -> ~4
    g = f.copy()
    g[:, 0] += 2
    assert frechet_distance(f, g) == pytest.approx(4.0, abs=1e-6)


# ------------------------------------------------------------------------------------- report

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny run (4 steps at 64x64), three test photos and a 64x64 mask set (2 per type)."""
    from training.config import CONFIG_DIR, load_config
    from training.train import Trainer

    tmp = tmp_path_factory.mktemp("eval")
    photos = tmp / "photos"
    photos.mkdir()
    for n in PHOTOS:
        (photos / n).write_bytes((DATA / n).read_bytes())
    torch.set_num_threads(1)
    cfg = load_config(CONFIG_DIR / "glama-tiny.yaml", [
        f"data.root={photos}", "data.holdout=[]", "data.crop=64", "optim.batch_size=2", "train.steps=4",
        f"train.out_dir={tmp / 'run'}", "train.val_every=0", "train.image_every=0", "model.disc_ndf=16",
        "model.disc_layers=3"])
    weights = Trainer(cfg).fit()
    masks = tmp / "masks"
    write_mask_set(masks, (64, 64), per_type=2, seed=0)
    return weights, photos, masks, tmp


def test_report_has_seven_types_and_sane_psnr(setup):
    from training.evaluate import main

    weights, photos, masks, tmp = setup
    out = tmp / "report"
    assert main(["--weights", str(weights), "--images", str(photos), "--masks", str(masks), "--out", str(out),
                 "--threads", "1", "-q"]) == 0
    rep = json.loads((tmp / "report.json").read_text())
    assert list(rep["types"]) == list(MASK_TYPES)
    for t, row in rep["types"].items():
        assert row["n"] == 2 * len(PHOTOS)
        assert 8 < row["psnr"] < 60, (t, row["psnr"])  # a 4-step model: well above noise, below perfect
        assert 0 < row["ssim"] <= 1
        assert row["lpips"] is None and row["fid"] is None
    # small holes are easier than large ones
    assert rep["types"]["thin"]["psnr"] > rep["types"]["expand"]["psnr"]
    assert rep["lpips"] == rep["fid"] == "n/a (no weights)"
    md = (tmp / "report.md").read_text()
    assert all(t in md for t in MASK_TYPES) and "n/a (no weights)" in md and "PSNR" in md
    assert not list(tmp.glob(".report*.tmp"))


def test_lpips_and_fid_columns_with_local_weights(setup, tmp_path):
    """The LPIPS/FID code paths with stand-in weight files (real ones cannot be downloaded here)."""
    from training.evaluate import evaluate
    from training.metrics import LPIPSAlex

    weights, photos, masks, _ = setup
    torch.manual_seed(0)
    # Stand-ins with the real files' key names and shapes: torchvision's alexnet-owt file (trunk +
    # classifier, which is ignored) and the lpips package's weights/v0.1/alex.pth (heads
    # `lin{i}.model.1.weight`, non-negative).
    trunk = {}
    for i, (cin, cout, k) in zip((0, 3, 6, 8, 10), ((3, 64, 11), (64, 192, 5), (192, 384, 3), (384, 256, 3),
                                                    (256, 256, 3)), strict=True):
        trunk[f"features.{i}.weight"] = torch.randn(cout, cin, k, k) * (2 / (cin * k * k)) ** 0.5
        trunk[f"features.{i}.bias"] = torch.zeros(cout)
    trunk["classifier.1.weight"] = torch.randn(16, 9216)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPSAlex.CHANNELS)}
    torch.save(trunk, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")

    class Feats(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)

    torch.jit.save(torch.jit.script(Feats()), tmp_path / "feats.pt")
    rep = evaluate(weights, photos, masks, lpips_weights=f"{tmp_path / 'alexnet.pth'},{tmp_path / 'alex.pth'}",
                   fid_weights=str(tmp_path / "feats.pt"), threads=1, progress=False)
    for row in rep["types"].values():
        assert row["lpips"] is not None and row["lpips"] > 0
        assert row["fid"] is not None and np.isfinite(row["fid"]) and row["fid"] >= 0
    assert rep["lpips"] == rep["fid"] == "computed"
    # the loader put those exact tensors in place; identical images are at distance 0
    from training.metrics import load_lpips

    lp = load_lpips(f"{tmp_path / 'alexnet.pth'},{tmp_path / 'alex.pth'}")
    assert torch.equal(lp.lin2.model[1].weight, heads["lin2.model.1.weight"])
    assert torch.equal(lp.features[3].weight, trunk["features.3.weight"])
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(lp(x, x), torch.zeros(2))
    assert (lp(x, x.flip(-1)) > 0).all()


def test_onnx_engine_matches_torch(setup, tiny_model, tiny_onnx, tmp_path):
    """The same generator through onnxruntime (conftest's session-wide export) and torch."""
    from glama_deploy.model.weights import save_weights
    from training.evaluate import evaluate

    _, photos, masks, _ = setup
    weights = save_weights(tiny_model, tmp_path / "tiny.safetensors", step=0, source="test")
    a = evaluate(weights, photos, masks, threads=1, progress=False, max_images=1)
    b = evaluate(tiny_onnx, photos, masks, threads=1, progress=False, max_images=1)
    assert (a["engine"], b["engine"]) == ("torch", "onnxruntime")
    for t in MASK_TYPES:
        assert b["types"][t]["psnr"] == pytest.approx(a["types"][t]["psnr"], abs=0.05)


def test_bad_inputs_are_one_line_errors(setup, tmp_path, capsys):
    from training.evaluate import main

    weights, photos, masks, _ = setup
    base = ["--out", str(tmp_path / "r"), "-q"]
    cases = [
        (["--weights", str(weights), "--images", str(tmp_path / "none"), "--masks", str(masks)], "none"),
        (["--weights", str(weights), "--images", str(photos), "--masks", str(tmp_path)], "manifest.json"),
        (["--weights", str(tmp_path / "w.safetensors"), "--images", str(photos), "--masks", str(masks)],
         "w.safetensors"),
        (["--weights", str(weights), "--images", str(photos), "--masks", str(masks),
          "--lpips-weights", str(tmp_path / "alex.pth")], "alex.pth"),
    ]
    for args, needle in cases:
        assert main(base + args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "r.json").exists()


def test_opencv_baseline_rows(setup, tmp_path, capsys):
    """--baseline telea|ns: OpenCV's classical inpainting through the same report, for comparison."""
    import cv2

    from training.baselines import OpenCVInpaintEngine
    from training.evaluate import main

    _, photos, masks, _ = setup
    out = tmp_path / "telea"
    assert main(["--baseline", "telea", "--images", str(photos), "--masks", str(masks), "--out", str(out), "-q"]) == 0
    rep = json.loads((tmp_path / "telea.json").read_text())
    assert rep["engine"] == "opencv-telea" and rep["weights_metadata"] == {}
    assert all(8 < row["psnr"] < 60 for row in rep["types"].values())
    assert rep["types"]["thin"]["psnr"] > rep["types"]["expand"]["psnr"]
    assert "# Evaluation: opencv-telea" in (tmp_path / "telea.md").read_text()

    # the engine is cv2.inpaint on the 8-bit image, known pixels untouched, any size (no padding)
    rgb = cv2.imread(str(photos / PHOTOS[0]))[:61, :77, ::-1]
    hole = np.zeros(rgb.shape[:2], np.uint8)
    hole[20:40, 10:50] = 1
    x = (rgb.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    for method, flag in (("telea", cv2.INPAINT_TELEA), ("ns", cv2.INPAINT_NS)):
        got = OpenCVInpaintEngine(method)(x, hole[None, None].astype(np.float32))
        ref = cv2.inpaint(np.ascontiguousarray(rgb), hole, 5, flag).astype(np.float32) / 255
        assert got.shape == x.shape
        assert np.array_equal(got[0].transpose(1, 2, 0)[hole > 0], ref[hole > 0])
        assert np.array_equal(got[0][:, hole == 0], x[0][:, hole == 0])
    with pytest.raises(SystemExit):  # weights and baseline are exclusive
        main(["--baseline", "ns", "--weights", "w.safetensors", "--images", str(photos), "--masks", str(masks),
              "--out", str(tmp_path / "x")])
    assert "not allowed with" in capsys.readouterr().err
