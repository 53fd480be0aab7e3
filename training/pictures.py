"""Before / after pictures for the README: people judge an inpainter by looking.

    python -m training.pictures --weights glama_deploy/assets/glama-small.safetensors --out docs

Writes (atomically, JPEG quality 90):

* ``demo-<photo>.jpg`` for every ``--demo PHOTO:MASK`` pair (default: the README's demo,
  ``mate-dune`` with its mask): the photo with its holes shown grey | OpenCV Telea | the model,
  cropped around the holes;
* ``mask-types.jpg``: one row per NTIRE 2022 mask type, each on a held-out photo at short side
  256: holes shown grey | Telea | the model | the original.

Photos come from ``--photos`` (held-out ones: never trained on); masks are drawn like
:mod:`training.compare` draws them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from glama_deploy.fsutil import atomic_write_bytes
from glama_deploy.io import InputError, read_mask
from training.baselines import baseline_engine
from training.compare import draw_masks, inpaint_u8, open_engine, resize_for
from training.data import DataError, read_rgb_u8
from training.masks import MASK_TYPES

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "glama_deploy" / "assets" / "samples"
DEFAULT_TYPE_PHOTOS = ("plasma-kite.jpg", "mate-ladybird.jpg", "lomiri-wine.jpg", "plasma-eveningglow.jpg",
                       "lomiri-seeding.jpg", "plasma-path.jpg", "mate-dune.jpg")  # held out of training


def _holes_grey(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.copy()
    out[mask > 0] = 128
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    scale = max(0.4, img.shape[1] / 700)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 8, th + 10), (0, 0, 0), -1)
    cv2.putText(out, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _row(cells: list[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
    h = max(c.shape[0] for _, c in cells)
    parts = []
    for text, c in cells:
        parts += [_label(c, text), np.full((h, gap, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def _write_jpeg(path: Path, rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise InputError(f"{path}: could not encode")
    atomic_write_bytes(path, buf.tobytes())
    return path


def demo_picture(model, telea, photo: Path, mask_path: Path, out: Path, margin: int = 48) -> Path:
    img = read_rgb_u8(photo)
    mask = read_mask(mask_path, img.shape[:2])
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - margin), min(img.shape[0], ys.max() + margin)
    x0, x1 = max(0, xs.min() - margin), min(img.shape[1], xs.max() + margin)
    crop = (slice(y0, y1), slice(x0, x1))
    cells = [("input (holes grey)", _holes_grey(img, mask)[crop]), ("OpenCV Telea", inpaint_u8(telea, img, mask)[crop]),
             ("glama-deploy default", inpaint_u8(model, img, mask)[crop])]
    return _write_jpeg(out / f"demo-{photo.stem}.jpg", np.concatenate([_row(cells)], axis=0))


def mask_types_picture(model, telea, photos: list[Path], out: Path, size: int = 256, seed: int = 3) -> Path:
    rows = []
    for i, (t, photo) in enumerate(zip(MASK_TYPES, photos, strict=False)):
        img = resize_for(read_rgb_u8(photo), size)
        mask = draw_masks(img.shape[0], img.shape[1], seed, i, 1)[t][0]
        rows.append(_row([(f"{t}", _holes_grey(img, mask)), ("Telea", inpaint_u8(telea, img, mask)),
                          ("default model", inpaint_u8(model, img, mask)), ("original", img)]))
    w = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, w - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return _write_jpeg(out / "mask-types.jpg", np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.pictures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", default="docs")
    ap.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos"),
                    help="folder holding the held-out photos for mask-types.jpg")
    ap.add_argument("--type-photos", nargs="+", default=list(DEFAULT_TYPE_PHOTOS),
                    help="one held-out photo per mask type, in the order of the seven types")
    ap.add_argument("--demo", nargs="*", default=[f"{SAMPLES / 'mate-dune.jpg'}:{SAMPLES / 'mate-dune_mask.png'}"],
                    metavar="PHOTO:MASK")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    from glama_deploy.engines import EngineError
    from glama_deploy.model.weights import WeightsError

    out = Path(args.out)
    try:
        model, telea = open_engine(args.weights, args.threads), baseline_engine("telea")
        for pair in args.demo:
            photo, _, mask = pair.partition(":")
            print(demo_picture(model, telea, Path(photo), Path(mask), out))
        print(mask_types_picture(model, telea, [Path(args.photos) / p for p in args.type_photos], out))
    except (InputError, DataError, WeightsError, EngineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
