"""Reading, validating and atomically writing images and masks.

Conventions: images are returned as float32 RGB HxWx3 in [0,1]; masks as float32 HxW in {0,1}
(1 = hole; any nonzero pixel of the mask file is a hole). Errors are :class:`InputError` with a
one-line message that names the file.

Handling of unusual inputs (documented in the README):
- grayscale images are expanded to RGB; the result is written as RGB;
- RGBA images are inpainted on RGB and their alpha channel is written back unchanged;
- 16-bit images are read at full precision and written back as 16-bit PNG/TIFF when the output
  format allows it (8-bit otherwise);
- colour masks count a pixel as a hole when any channel is nonzero; a mask's alpha is ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .fsutil import atomic_write_bytes

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MIN_SIDE = 8
MAX_PIXELS = 100_000_000  # ~ 12k x 8k; bigger is almost certainly a mistake


def truncation_problem(data: bytes) -> str | None:
    """Why a JPEG or PNG file's bytes are cut short, or None (other formats: None).

    OpenCV decodes a truncated JPEG without an error (libjpeg warns "Premature end of JPEG file",
    naming no file) and fills the missing part with grey. A complete JPEG has an end-of-image
    marker after its last start-of-scan (entropy-coded data cannot hold FF D9); a complete PNG
    ends with its IEND chunk. ``data`` may be the file's first bytes followed by only its last part
    (the rule needs just the end of the file).
    """
    if data[:3] == b"\xff\xd8\xff":
        eoi = data.rfind(b"\xff\xd9")
        if eoi < 0 or eoi < data.rfind(b"\xff\xda"):
            return "truncated or corrupt JPEG (no end-of-image marker after the image data)"
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-64:]:
            return "truncated or corrupt PNG (no IEND chunk at the end)"
    return None


@dataclass
class LoadedImage:
    """An image as decoded: integer RGB pixels (no float copy until :meth:`to_nchw`)."""

    pixels: np.ndarray  # uint8/uint16 HxWx3 RGB (may be a view of the decoded BGR buffer)
    alpha: np.ndarray | None  # original alpha channel (uint8/uint16) or None
    bit_depth: int  # 8 or 16
    path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[0], self.pixels.shape[1]

    @property
    def rgb(self) -> np.ndarray:
        """float32 HxWx3 in [0,1] (a new array)."""
        return self.to_nchw()[0].transpose(1, 2, 0)

    def to_nchw(self) -> np.ndarray:
        """float32 (1,3,H,W) in [0,1], filled channel by channel: no full-size temporaries
        (an 8K image is 400 MB as float32; we make exactly one such array)."""
        h, w = self.shape
        out = np.empty((1, 3, h, w), np.float32)
        scale = np.float32(1.0 / (65535.0 if self.bit_depth == 16 else 255.0))
        for c in range(3):
            np.multiply(self.pixels[:, :, c], scale, out=out[0, c], casting="unsafe")
        return out


def check_file(path: str | os.PathLike, what: str = "image") -> None:
    """The cheap checks of :func:`read_image` / :func:`read_mask` without decoding: the file exists,
    has an image signature OpenCV reads, and is not a truncated JPEG/PNG. For a fast first pass
    over many inputs before a model is loaded."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (1 << 20)))  # the end of the file holds what truncation removes
            tail = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if not head:
        raise InputError(f"{path}: empty file")
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        problem = truncation_problem(head + tail if size > len(tail) else tail)
        if problem:
            raise InputError(f"{path}: {problem}")


def _decode(path: Path, what: str) -> np.ndarray:
    """Decode a file as stored (depth, channels), refusing truncated JPEG/PNG files by name."""
    try:
        raw = np.fromfile(str(path), np.uint8)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    problem = truncation_problem(raw.tobytes())
    if problem:
        raise InputError(f"{path}: {problem}")
    data = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if data is None:
        raise InputError(f"{path}: not a readable {what} (OpenCV could not decode it)")
    return data


def read_image(path: str | os.PathLike) -> LoadedImage:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    data = _decode(path, "image")
    if data.dtype == np.uint8:
        depth = 8
    elif data.dtype == np.uint16:
        depth = 16
    else:
        raise InputError(f"{path}: unsupported pixel type {data.dtype} (use 8- or 16-bit images)")
    alpha = None
    if data.ndim == 2:
        rgb = np.broadcast_to(data[:, :, None], (*data.shape, 3))
    elif data.shape[2] == 1:
        rgb = np.broadcast_to(data, (*data.shape[:2], 3))
    elif data.shape[2] == 3:
        rgb = data[:, :, ::-1]
    elif data.shape[2] == 4:
        rgb, alpha = data[:, :, 2::-1], data[:, :, 3].copy()
    else:
        raise InputError(f"{path}: unsupported channel count {data.shape[2]}")
    check_size(rgb.shape[0], rgb.shape[1], path)
    return LoadedImage(rgb, alpha, depth, path)


def check_size(h: int, w: int, path: Path | str) -> None:
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{path}: image is {w}x{h}; both sides must be at least {MIN_SIDE} px")
    if h * w > MAX_PIXELS:
        raise InputError(f"{path}: image is {w}x{h} ({h * w / 1e6:.0f} MP), above the "
                         f"{MAX_PIXELS / 1e6:.0f} MP limit")


def read_mask(path: str | os.PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a mask; nonzero = hole. ``shape`` (H, W) must match when given."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: mask file not found")
    data = _decode(path, "mask image")
    if data.ndim == 3:
        data = data[:, :, :3] if data.shape[2] == 4 else data
        data = data.max(axis=2)
    if shape is not None and data.shape[:2] != tuple(shape):
        raise InputError(f"{path}: mask is {data.shape[1]}x{data.shape[0]} but the image is "
                         f"{shape[1]}x{shape[0]}")
    return (data > 0).astype(np.float32)


def to_nchw(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 / HxW -> (1,3,H,W) / (1,1,H,W) float32."""
    return (np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32),
            np.ascontiguousarray(mask[None, None], dtype=np.float32))


def _quantize_bgr(rgb: np.ndarray, depth: int) -> np.ndarray:
    """float RGB (HxWx3, any strides: a CHW array transposed works) -> integer BGR HxWx3,
    one channel at a time so the only float temporary is one HxW plane."""
    scale, dtype = (65535.0, np.uint16) if depth == 16 else (255.0, np.uint8)
    out = np.empty((rgb.shape[0], rgb.shape[1], 3), dtype)
    for c in range(3):
        plane = np.multiply(rgb[:, :, c], np.float32(scale), dtype=np.float32)
        np.rint(plane, out=plane)
        np.clip(plane, 0, scale, out=plane)
        out[:, :, 2 - c] = plane
    return out


def encode_image(path: Path, rgb: np.ndarray, alpha: np.ndarray | None = None, depth: int = 8) -> bytes:
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS:
        raise InputError(f"{path}: unknown output format '{ext}' (use one of {', '.join(IMAGE_EXTS)})")
    if depth == 16 and ext not in (".png", ".tif", ".tiff"):
        depth = 8
    out = _quantize_bgr(rgb, depth)
    if alpha is not None:
        if ext in (".jpg", ".jpeg", ".bmp"):
            alpha = None  # format has no alpha channel
        else:
            a = alpha
            if a.dtype != out.dtype:
                a = (a.astype(np.float32) / np.iinfo(a.dtype).max * np.iinfo(out.dtype).max).round()
                a = a.astype(out.dtype)
            out = np.dstack([out, a])
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(out), params)
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode the result")
    return buf.tobytes()


def write_image(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
                depth: int = 8) -> Path:
    """Encode in memory, then write to a temp file beside ``path`` and rename (never half-written)."""
    path = Path(path)
    atomic_write_bytes(path, encode_image(path, rgb, alpha, depth))
    return path


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
