"""Compare models and classical baselines at the sizes users run, in one table.

    python -m training.compare --images ../shared/data/photos ../shared/data/photos-extra \\
        --include-from training/configs/glama-small.yaml --sizes 256 512 full --per-type 2 \\
        --model bundled=glama_deploy/assets/glama-small.safetensors --model telea --model ns \\
        --out reports/quality

Unlike :mod:`training.evaluate` (square center crops and a fixed mask set), every photo keeps its
aspect ratio: it is resized so its short side is 256 or 512 (``full``: its own size, long side
capped at 1024), and each mask of the seven NTIRE 2022 types is drawn at that exact size, keyed by
``(seed, photo, type, index)`` so every model sees the same pairs. Stroke masks scale with the
short side (:func:`training.masks.stroke_params`).

Metrics per (size, model, type), averaged over photos x masks: **in-hole PSNR** (the known pixels
of a composite are exact, so a whole-image PSNR mostly measures the hole's share of the image)
and SSIM of the whole composite. Composites are rounded to 8 bits first, as the CLI writes them.
A ``--model`` is ``NAME=WEIGHTS`` (any weights the engines read), a bare weights path, or
``telea`` / ``ns`` (OpenCV's ``cv2.inpaint``, radius 5) or ``pyramid`` (the fill that prefill
generators start from, without a network). Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from glama_deploy.io import InputError, atomic_write_bytes
from training.baselines import BASELINES, baseline_engine
from training.data import DataError, find_images, read_rgb_u8
from training.masks import MASK_TYPES
from training.metrics import hole_psnr, ssim

FULL_CAP = 1024


def resize_for(img: np.ndarray, size: int | str) -> np.ndarray:
    """Short side ``size`` (area down / cubic up), or ``"full"``: as is, long side capped at 1024."""
    h, w = img.shape[:2]
    if size == "full":
        s = min(1.0, FULL_CAP / max(h, w))
    else:
        s = int(size) / min(h, w)
    if abs(s - 1) < 1e-9:
        return img
    nh, nw = max(8, round(h * s)), max(8, round(w * s))
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


def draw_masks(h: int, w: int, seed: int, photo: int, per_type: int) -> dict[str, list[np.ndarray]]:
    """``per_type`` masks of each NTIRE type at (h, w), keyed by (seed, photo, type, index)."""
    out = {}
    for ti, (name, cls) in enumerate(MASK_TYPES.items()):
        gen = cls()
        out[name] = [gen(h, w, np.random.default_rng([seed, photo, ti, k])) for k in range(per_type)]
    return out


def parse_model(spec: str) -> tuple[str, str]:
    """``NAME=PATH`` | ``PATH`` | ``telea`` | ``ns`` -> (label, spec)."""
    if "=" in spec:
        label, path = spec.split("=", 1)
        return label, path
    if spec in BASELINES:
        return {"telea": "OpenCV Telea", "ns": "OpenCV Navier-Stokes", "pyramid": "pyramid fill alone"}[spec], spec
    return Path(spec).stem, spec


def open_engine(spec: str, threads: int | None):
    if spec in BASELINES:
        return baseline_engine(spec)
    from glama_deploy.engines import create_engine

    path = Path(spec)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    kind = "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"
    return create_engine(kind, str(path), threads=threads)


def to_u8_composite(out: np.ndarray) -> np.ndarray:
    """(3,H,W) float composite -> HxWx3 float in [0,1] on the 8-bit grid (as the CLI writes it)."""
    return np.clip(np.rint(out.transpose(1, 2, 0) * 255), 0, 255) / 255.0


def inpaint_u8(engine, rgb_u8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Inpaint an HxWx3 uint8 RGB image (``mask`` HxW, nonzero = hole) with any engine: HxWx3 uint8,
    rounded as the CLI writes it."""
    x = np.ascontiguousarray(rgb_u8.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
    out = engine(x, (mask[None, None] > 0).astype(np.float32))[0]
    return np.clip(np.rint(out.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)


def compare(images: list[str], models: list[str], sizes: list[str], per_type: int = 2, seed: int = 0,
            include: list[str] | None = None, threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    paths = find_images(images)
    if include:
        names = {p.name for p in paths}
        missing = sorted(set(include) - names)
        if missing:
            raise DataError(f"{', '.join(images)}: photos not found: {', '.join(missing)}")
        paths = [p for p in paths if p.name in set(include)]
    photos = [(p.name, read_rgb_u8(p)) for p in paths]
    labelled = [parse_model(m) for m in models]
    engines = [(label, open_engine(spec, threads)) for label, spec in labelled]
    from tqdm import tqdm

    total = len(sizes) * len(photos) * len(MASK_TYPES) * per_type * len(engines)
    bar = tqdm(total=total, unit="img", disable=not progress, desc="compare")
    acc: dict[str, dict[str, dict[str, dict[str, list[float]]]]] = {}
    seconds: dict[str, float] = {label: 0.0 for label, _ in engines}
    for size in sizes:
        for pi, (_, img) in enumerate(photos):
            im = resize_for(img, size)
            gt = im.astype(np.float32) / 255.0
            x = np.ascontiguousarray(gt.transpose(2, 0, 1)[None])
            for t, masks in draw_masks(im.shape[0], im.shape[1], seed, pi, per_type).items():
                for m in masks:
                    for label, eng in engines:
                        t0 = time.perf_counter()
                        out = eng(x, m[None, None].astype(np.float32))[0]
                        seconds[label] += time.perf_counter() - t0
                        comp = to_u8_composite(out)
                        row = acc.setdefault(str(size), {}).setdefault(label, {}).setdefault(
                            t, {"psnr_hole": [], "ssim": []})
                        row["psnr_hole"].append(hole_psnr(comp, gt, m))
                        row["ssim"].append(ssim(comp, gt))
                        bar.update(1)
    bar.close()
    for _, eng in engines:
        eng.close()
    results: dict[str, Any] = {}
    for size, by_model in acc.items():
        results[size] = {}
        for label, by_type in by_model.items():
            r = {t: {"psnr_hole": float(np.mean(v["psnr_hole"])), "psnr_hole_std": float(np.std(v["psnr_hole"])),
                     "ssim": float(np.mean(v["ssim"])), "n": len(v["psnr_hole"])} for t, v in by_type.items()}
            r["mean"] = {k: float(np.mean([r[t][k] for t in by_type])) for k in ("psnr_hole", "ssim")}
            results[size][label] = r
    return {
        "format": "glama-deploy/compare-report/v1",
        "images": [n for n, _ in photos],
        "image_folders": list(images),
        "sizes": [str(s) for s in sizes],
        "masks_per_type": per_type,
        "seed": seed,
        "models": {label: spec for label, spec in labelled},
        "results": results,
        "seconds_per_image": {k: round(v / max(1, total // len(engines)), 4) for k, v in seconds.items()},
    }


def to_markdown(rep: dict[str, Any]) -> str:
    types = list(MASK_TYPES)
    lines = [f"In-hole PSNR (dB, higher is better) on {len(rep['images'])} photos x {rep['masks_per_type']} masks "
             f"per type (seed {rep['seed']}); composites rounded to 8 bits.", "",
             "| size | model | " + " | ".join(types) + " | mean |", "| --- | --- |" + " --- |" * (len(types) + 1)]
    for size in rep["sizes"]:
        label_size = "own size (<= 1024)" if size == "full" else f"short side {size}"
        by_model = rep["results"][size]
        best = {t: max(by_model[m][t]["psnr_hole"] for m in by_model) for t in types + ["mean"]}
        for m, r in by_model.items():
            cells = [f"**{r[t]['psnr_hole']:.2f}**" if r[t]["psnr_hole"] == best[t] else f"{r[t]['psnr_hole']:.2f}"
                     for t in types + ["mean"]]
            lines.append(f"| {label_size} | {m} | " + " | ".join(cells) + " |")
    lines += ["", "SSIM of the whole composite:", "",
              "| size | model | " + " | ".join(types) + " | mean |", "| --- | --- |" + " --- |" * (len(types) + 1)]
    for size in rep["sizes"]:
        for m, r in rep["results"][size].items():
            lines.append(f"| {size} | {m} | " + " | ".join(f"{r[t]['ssim']:.4f}" for t in types + ["mean"]) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0],
                                 epilog="See the module docstring (python -c 'import training.compare; "
                                        "help(training.compare)') for the protocol.")
    ap.add_argument("--images", nargs="+", required=True, help="photo folder(s), searched recursively")
    ap.add_argument("--include", nargs="+", metavar="NAME", help="use only these file names")
    ap.add_argument("--include-from", metavar="YAML",
                    help="use the data.exclude list (the test photos) of a training config")
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=WEIGHTS, a weights path, or telea / ns / pyramid (repeatable)")
    ap.add_argument("--sizes", nargs="+", default=["256", "512", "full"], help="short sides, or 'full'")
    ap.add_argument("--per-type", type=int, default=2, help="masks per photo and type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True, help="report path without extension (OUT.json, OUT.md)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    from glama_deploy.engines import EngineError
    from glama_deploy.model.weights import WeightsError

    try:
        for s in args.sizes:
            if s != "full" and not (s.isdigit() and int(s) >= 8):
                raise InputError(f"--sizes: {s!r} is neither a short side >= 8 nor 'full'")
        include = list(args.include or [])
        if args.include_from:
            from training.config import ConfigError, load_config

            try:
                include += load_config(args.include_from).data.exclude
            except ConfigError as e:
                raise InputError(str(e)) from None
        rep = compare(args.images, args.model, args.sizes, args.per_type, args.seed, include or None,
                      args.threads, progress=not args.quiet)
    except (InputError, DataError, WeightsError, EngineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write_bytes(out.with_name(out.name + ".json"), (json.dumps(rep, indent=2) + "\n").encode())
    md = to_markdown(rep)
    atomic_write_bytes(out.with_name(out.name + ".md"), md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
