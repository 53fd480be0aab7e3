"""`python -m glama_deploy.infer`: real photos, folders, every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from glama_deploy.infer import main

from .conftest import DEFAULT_WEIGHTS, ROOT, SAMPLES


@pytest.fixture()
def photo(tmp_path):
    """A real photo (downscaled, odd size) and a mask with a hole touching the border."""
    img = cv2.imread(str(SAMPLES / "plasma-path.jpg"))
    img = cv2.resize(img, (301, 189), interpolation=cv2.INTER_AREA)
    mask = np.zeros(img.shape[:2], np.uint8)
    mask[60:120, 200:301] = 255
    cv2.imwrite(str(tmp_path / "p.png"), img)
    cv2.imwrite(str(tmp_path / "p_mask.png"), mask)
    return tmp_path / "p.png", tmp_path / "p_mask.png", img, mask


def run(args, capsys):
    code = main([str(a) for a in args] + ["--quiet"])
    return code, capsys.readouterr()


def test_known_pixels_are_bit_exact_and_hole_filled(photo, tmp_path, capsys):
    img_path, mask_path, img, mask = photo
    out = tmp_path / "out" / "r.png"
    code, cap = run(["--image", img_path, "--mask", mask_path, "--out", out, "--json"], capsys)
    assert code == 0, cap.err
    res = cv2.imread(str(out))
    assert res.shape == img.shape
    known = mask == 0
    assert np.array_equal(res[known], img[known])
    assert not np.array_equal(res[~known], img[~known])
    summary = json.loads(cap.out)
    assert summary["count"] == 1 and summary["results"][0]["width"] == 301
    assert abs(summary["results"][0]["hole_fraction"] - (mask > 0).mean()) < 1e-6
    assert oct(out.stat().st_mode & 0o777) != oct(0o600), "outputs get normal permissions"


def test_onnx_engine_matches_torch_engine(photo, tmp_path, tiny_onnx, tiny_model, capsys):
    from glama_deploy.model.weights import save_weights

    img_path, mask_path, *_ = photo
    w = save_weights(tiny_model, tmp_path / "w.safetensors")
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert run(["--image", img_path, "--mask", mask_path, "--out", a, "--weights", w], capsys)[0] == 0
    assert run(["--image", img_path, "--mask", mask_path, "--out", b, "--weights", tiny_onnx], capsys)[0] == 0
    diff = np.abs(cv2.imread(str(a)).astype(int) - cv2.imread(str(b)).astype(int))
    assert diff.max() <= 1  # 8-bit rounding of <= 1e-4 float differences


def test_folder_mode_pairs_by_name(tmp_path, capsys):
    src, masks, out = tmp_path / "img", tmp_path / "masks", tmp_path / "out"
    src.mkdir(), masks.mkdir()
    for i, name in enumerate(["mate-dune", "lomiri-seeding"]):
        im = cv2.resize(cv2.imread(str(SAMPLES / f"{name}.jpg")), (96 + 8 * i, 64))
        cv2.imwrite(str(src / f"{name}.jpg"), im)
        m = np.zeros(im.shape[:2], np.uint8)
        m[20:40, 30:60] = 255
        cv2.imwrite(str(masks / (f"{name}_mask.png" if i else f"{name}.png")), m)
    code, cap = run(["--image", src, "--mask", masks, "--out", out, "--suffix", "_filled", "--json"], capsys)
    assert code == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == ["lomiri-seeding_filled.jpg", "mate-dune_filled.jpg"]
    assert json.loads(cap.out)["count"] == 2


def test_empty_mask_returns_input_unchanged(photo, tmp_path, capsys):
    img_path, mask_path, img, _ = photo
    cv2.imwrite(str(mask_path), np.zeros(img.shape[:2], np.uint8))
    out = tmp_path / "same.png"
    assert run(["--image", img_path, "--mask", mask_path, "--out", out], capsys)[0] == 0
    assert np.array_equal(cv2.imread(str(out)), img)


def test_rgba_keeps_alpha_and_grayscale_becomes_rgb(photo, tmp_path, capsys):
    _, mask_path, img, mask = photo
    alpha = np.tile(np.linspace(0, 255, img.shape[1]).astype(np.uint8), (img.shape[0], 1))
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.dstack([img, alpha]))
    out = tmp_path / "rgba_out.png"
    assert run(["--image", rgba, "--mask", mask_path, "--out", out], capsys)[0] == 0
    res = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert res.shape == (*img.shape[:2], 4) and np.array_equal(res[:, :, 3], alpha)
    assert np.array_equal(res[:, :, :3][mask == 0], img[mask == 0])

    gray = tmp_path / "gray.png"
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(gray), g)
    out = tmp_path / "gray_out.png"
    assert run(["--image", gray, "--mask", mask_path, "--out", out], capsys)[0] == 0
    res = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert res.shape == (*g.shape, 3) and np.array_equal(res[:, :, 0][mask == 0], g[mask == 0])


def test_16bit_image_stays_16bit(photo, tmp_path, capsys):
    _, mask_path, img, mask = photo
    deep = img.astype(np.uint16) * 257 + 3
    src = tmp_path / "deep.png"
    cv2.imwrite(str(src), deep)
    out = tmp_path / "deep_out.png"
    assert run(["--image", src, "--mask", mask_path, "--out", out], capsys)[0] == 0
    res = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert res.dtype == np.uint16 and np.array_equal(res[mask == 0], deep[mask == 0])


@pytest.mark.parametrize("case,needle", [
    ("missing_image", "nope.png: not found"),
    ("unreadable", "bad.png: not a readable image"),
    ("size_mismatch", "mask is 10x10 but the image is 301x189"),
    ("tiny_image", "both sides must be at least 8 px"),
    ("missing_weights", "w.safetensors: weights file not found"),
    ("overwrite", "would overwrite an input"),
    ("bad_out_ext", "unknown output format '.xyz'"),
    ("onnx_engine_on_safetensors", "the onnxruntime engine needs an .onnx file"),
    ("folder_missing_mask", "no mask named"),
])
def test_bad_input_is_one_line_exit_2(photo, tmp_path, capsys, case, needle):
    img_path, mask_path, img, mask = photo
    args = {"--image": img_path, "--mask": mask_path, "--out": tmp_path / "o.png"}
    extra: list = []
    if case == "missing_image":
        args["--image"] = tmp_path / "nope.png"
    elif case == "unreadable":
        (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
        args["--image"] = tmp_path / "bad.png"
    elif case == "size_mismatch":
        cv2.imwrite(str(mask_path), np.full((10, 10), 255, np.uint8))
    elif case == "tiny_image":
        cv2.imwrite(str(img_path), img[:5, :5])
    elif case == "missing_weights":
        extra = ["--weights", tmp_path / "w.safetensors"]
    elif case == "overwrite":
        args["--out"] = img_path
    elif case == "bad_out_ext":
        args["--out"] = tmp_path / "o.xyz"
    elif case == "onnx_engine_on_safetensors":
        extra = ["--engine", "onnxruntime"]
    elif case == "folder_missing_mask":
        (tmp_path / "imgs").mkdir(), (tmp_path / "msk").mkdir()
        cv2.imwrite(str(tmp_path / "imgs" / "a.png"), img)
        args = {"--image": tmp_path / "imgs", "--mask": tmp_path / "msk", "--out": tmp_path / "o"}
    before = img_path.read_bytes()
    code, cap = run([x for kv in args.items() for x in kv] + extra, capsys)
    assert code == 2
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], cap.err
    assert "Traceback" not in cap.err
    if case == "overwrite":
        assert img_path.read_bytes() == before


def test_failed_write_leaves_previous_output(photo, tmp_path, capsys, monkeypatch):
    """A write that dies half-way (disk full) leaves the previous output intact and no temp file."""
    import pathlib

    img_path, mask_path, *_ = photo
    out = tmp_path / "keep.png"
    out.write_bytes(b"previous result")
    real = pathlib.Path.write_bytes

    def half_then_fail(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    code, cap = run(["--image", img_path, "--mask", mask_path, "--out", out], capsys)
    assert code == 1 and "No space left on device" in cap.err and "Traceback" not in cap.err
    assert out.read_bytes() == b"previous result"
    assert not list(tmp_path.glob(".keep.png.*"))


def test_module_entry_point_and_help():
    """The README's main job, as a subprocess, on the bundled sample with the bundled model."""
    assert DEFAULT_WEIGHTS.is_file()
    r = subprocess.run([sys.executable, "-m", "glama_deploy.infer", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0 and "--mode" in r.stdout and "--engine" in r.stdout
