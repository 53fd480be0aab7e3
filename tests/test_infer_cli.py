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


def test_bf16_precision_keeps_known_pixels_and_stays_close_to_fp32(photo, tmp_path, capsys):
    img_path, mask_path, img, mask = photo
    a, b = tmp_path / "fp32.png", tmp_path / "bf16.png"
    assert run(["--image", img_path, "--mask", mask_path, "--out", a], capsys)[0] == 0
    assert run(["--image", img_path, "--mask", mask_path, "--out", b, "--precision", "bf16"], capsys)[0] == 0
    fp32, bf16 = cv2.imread(str(a)).astype(np.float64), cv2.imread(str(b)).astype(np.float64)
    known = mask == 0
    assert np.array_equal(bf16[known], img[known])
    mse = ((fp32[~known] - bf16[~known]) ** 2).mean()
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 35  # bf16 ran, and its fill is the fp32 fill's


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
    # JPEG inputs come out as PNG by default: a lossy re-encoding would change the known pixels
    assert sorted(p.name for p in out.iterdir()) == ["lomiri-seeding_filled.png", "mate-dune_filled.png"]
    assert json.loads(cap.out)["count"] == 2
    for name in ("mate-dune", "lomiri-seeding"):
        src_px, res = cv2.imread(str(src / f"{name}.jpg")), cv2.imread(str(out / f"{name}_filled.png"))
        known = cv2.imread(str(next(masks.glob(f"{name}*"))), 0) == 0
        assert np.array_equal(res[known], src_px[known])
    # asking for JPEG gets JPEG (without --quiet the CLI prints a note that it is lossy)
    code, cap = run(["--image", src, "--mask", masks, "--out", tmp_path / "jpg", "--format", "jpg"], capsys)
    assert code == 0 and sorted(p.suffix for p in (tmp_path / "jpg").iterdir()) == [".jpg", ".jpg"]


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


class Case:
    """One bad-input scenario built on the ``photo`` fixture: change ``args`` / ``extra`` / files."""

    def __init__(self, photo, tmp_path):
        self.img_path, self.mask_path, self.img, self.mask = photo
        self.tmp = tmp_path
        self.args = {"--image": self.img_path, "--mask": self.mask_path, "--out": tmp_path / "o.png"}
        self.extra: list = []

    def file(self, name: str, data: bytes):
        (self.tmp / name).write_bytes(data)
        return self.tmp / name

    def folder_without_mask(self):
        (self.tmp / "imgs").mkdir(), (self.tmp / "msk").mkdir()
        cv2.imwrite(str(self.tmp / "imgs" / "a.png"), self.img)
        self.args = {"--image": self.tmp / "imgs", "--mask": self.tmp / "msk", "--out": self.tmp / "o"}


def _jpeg(photo) -> bytes:
    return cv2.imencode(".jpg", photo[2])[1].tobytes()


# One row per bad input: (name, text the one-line error must contain, how to set it up).
BAD_INPUTS = [
    ("missing image", "nope.png: not found", lambda c: c.args.update({"--image": c.tmp / "nope.png"})),
    ("undecodable image", "bad.png: not a readable image",
     lambda c: c.args.update({"--image": c.file("bad.png", b"\x89PNG garbage")})),
    ("truncated JPEG", "cut.jpg: truncated or corrupt JPEG",
     lambda c: c.args.update({"--image": c.file("cut.jpg", _jpeg((0, 0, c.img))[:1024])})),
    ("empty mask file", "m.png: empty file", lambda c: c.args.update({"--mask": c.file("m.png", b"")})),
    ("mask size differs", "mask is 10x10 but the image is 301x189",
     lambda c: cv2.imwrite(str(c.mask_path), np.full((10, 10), 255, np.uint8))),
    ("image under 8 px", "both sides must be at least 8 px", lambda c: cv2.imwrite(str(c.img_path), c.img[:5, :5])),
    ("missing weights", "w.safetensors: weights file not found",
     lambda c: c.extra.extend(["--weights", c.tmp / "w.safetensors"])),
    ("random bytes as .safetensors", "r.safetensors: not a safetensors file",
     lambda c: c.extra.extend(["--weights", c.file("r.safetensors", np.random.bytes(4000))])),
    ("random bytes as .ckpt", "r.ckpt: not a PyTorch checkpoint",
     lambda c: c.extra.extend(["--weights", c.file("r.ckpt", b"not a checkpoint" * 99)])),
    ("random bytes as .onnx", "r.onnx: not a loadable ONNX model",
     lambda c: c.extra.extend(["--weights", c.file("r.onnx", b"\x07garbage" * 500)])),
    ("a device that is not there", "--device cuda:99", lambda c: c.extra.extend(["--device", "cuda:99"])),
    ("unknown device", "--device tpu: unknown device", lambda c: c.extra.extend(["--device", "tpu"])),
    ("output over the input", "would overwrite an input", lambda c: c.args.update({"--out": c.img_path})),
    ("unknown output format", "unknown output format '.xyz'", lambda c: c.args.update({"--out": c.tmp / "o.xyz"})),
    ("unknown --format", "--format gif: unknown format", lambda c: c.extra.extend(["--format", "gif"])),
    ("onnxruntime engine on .safetensors", "the onnxruntime engine needs an .onnx file",
     lambda c: c.extra.extend(["--engine", "onnxruntime"])),
    ("folder without a mask", "no mask named", lambda c: c.folder_without_mask()),
    ("bf16 on onnxruntime", "--precision bf16: only the torch engine runs bf16",
     lambda c: c.extra.extend(["--engine", "onnxruntime", "--precision", "bf16"])),
]


@pytest.mark.parametrize("name,needle,setup", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(photo, tmp_path, capsys, name, needle, setup):
    c = Case(photo, tmp_path)
    setup(c)
    before = c.img_path.read_bytes()
    code, cap = run([x for kv in c.args.items() for x in kv] + c.extra, capsys)
    assert code == 2, cap.err
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], cap.err
    assert "Traceback" not in cap.err
    assert c.img_path.read_bytes() == before and not (tmp_path / "o.png").exists()


def test_bad_input_is_reported_before_torch_is_imported(photo, tmp_path):
    """Argument and file checks come before any heavy import, so an error costs a fraction of a
    second rather than the 8-24 s torch takes to load on a busy machine."""
    img_path, mask_path, img, _ = photo
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(cv2.imencode(".jpg", img)[1].tobytes()[:2000])
    cases = [["--image", cut, "--mask", mask_path], ["--image", img_path, "--mask", mask_path, "--device", "cuda:99"],
             ["--image", img_path, "--mask", mask_path, "--weights", tmp_path / "none.safetensors"]]
    for args in cases:
        argv = [str(a) for a in args] + ["--out", str(tmp_path / "o.png")]
        code = (f"import sys; import glama_deploy.infer as m; rc = m.main({argv!r}); "
                "print(rc, 'torch' in sys.modules)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
        if "cuda:99" in argv and "True" in r.stdout:  # a CUDA build must import torch to count devices
            continue
        assert r.stdout.split() == ["2", "False"], (args, r.stdout, r.stderr)


def test_tiny_sides_and_colour_masks_work(tmp_path, capsys):
    """An image with an 8-px side is padded as needed; a 3-channel mask counts a pixel as a hole when
    any channel is nonzero (documented in the README)."""
    rng = np.random.default_rng(0)
    img = (rng.random((8, 40, 3)) * 255).astype(np.uint8)
    mask = np.zeros((8, 40, 3), np.uint8)
    mask[2:5, 10:20, 1] = 200  # green only
    cv2.imwrite(str(tmp_path / "i.png"), img)
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    code, cap = run(["--image", tmp_path / "i.png", "--mask", tmp_path / "m.png", "--out", tmp_path / "o.png"], capsys)
    assert code == 0, cap.err
    res = cv2.imread(str(tmp_path / "o.png"))
    hole = mask.max(axis=2) > 0
    assert np.array_equal(res[~hole], img[~hole]) and not np.array_equal(res[hole], img[hole])


def test_ctrl_c_in_folder_mode(tmp_path):
    """SIGINT between images: finished outputs stay, no half-written file, one line, exit 130."""
    import signal
    import time

    src, masks, out = tmp_path / "img", tmp_path / "masks", tmp_path / "out"
    src.mkdir(), masks.mkdir()
    im = cv2.resize(cv2.imread(str(SAMPLES / "plasma-path.jpg")), (512, 384))
    m = np.zeros(im.shape[:2], np.uint8)
    m[100:200, 150:300] = 255
    for i in range(40):
        cv2.imwrite(str(src / f"p{i:02d}.png"), im)
        cv2.imwrite(str(masks / f"p{i:02d}.png"), m)
    proc = subprocess.Popen([sys.executable, "-m", "glama_deploy.infer", "--image", src, "--mask", masks,
                             "--out", out, "--quiet", "--threads", "1"], cwd=ROOT, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(out.glob("p*.png"))):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    done = sorted(out.glob("p*.png"))
    assert err.strip().splitlines() == [f"interrupted after {len(done)} of 40 image(s)"], err
    assert 1 <= len(done) < 40 and not list(out.glob(".*"))
    assert all(cv2.imread(str(p)) is not None for p in done)


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
