"""Evaluate a generator per mask type, like the GLaMa paper's Tables 1-2.

    python -m training.evaluate --weights glama_deploy/assets/glama-small.safetensors \\
        --images held_out/ --masks masks256/ --out reports/glama-tiny
    python -m training.evaluate --baseline telea --images held_out/ --masks masks256/ --out reports/telea

``--masks`` is a fixed mask set written by ``python -m training.masks --out DIR --size 256
--per-type N``. Every image is resized and center-cropped to the mask size, inpainted with every
mask of every type (``--pairing all``; ``cycle`` pairs mask i with image i mod n), through
``glama_deploy.engines.create_engine`` ("torch" for .safetensors/.ckpt, "onnxruntime" for .onnx;
the engine pastes known pixels back, so metrics see the composite, as in the paper).

Metrics per type: PSNR and SSIM (always; see :mod:`training.metrics`), LPIPS with
``--lpips-weights`` and FID with ``--fid-weights`` (local files only; without them the columns say
"n/a (no weights)"). FID compares the inpainted images of a type with their originals; with a few
dozen images it is a very noisy number. Writes ``OUT.json`` and ``OUT.md`` atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glama_deploy.io import InputError, atomic_write_bytes, read_mask
from training.baselines import BASELINES, baseline_engine
from training.data import DataError, center_crop, find_images, read_rgb_u8
from training.metrics import MetricWeightsError, frechet_distance, load_fid_extractor, load_lpips, psnr, ssim

log = logging.getLogger("training.evaluate")

NA = "n/a (no weights)"
METRICS = (("psnr", "PSNR (dB) ↑", 2), ("ssim", "SSIM ↑", 4), ("lpips", "LPIPS ↓", 4), ("fid", "FID ↓", 2))


def engine_kind(path: Path) -> str:
    return "onnxruntime" if path.suffix.lower() == ".onnx" else "torch"


def load_images(folder: str | Path, h: int, w: int, limit: int = 0,
                include: list[str] | None = None) -> list[tuple[str, np.ndarray]]:
    paths = find_images(folder)
    if include:
        missing = sorted(set(include) - {p.name for p in paths})
        if missing:
            raise DataError(f"{folder}: --include names not found: {', '.join(missing)}")
        paths = [p for p in paths if p.name in set(include)]
    if limit:
        paths = paths[:limit]
    out = []
    for p in paths:
        img = center_crop(read_rgb_u8(p), h, w)
        out.append((p.name, img.astype(np.float32) / 255.0))
    return out


def _to_nchw(imgs: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2), dtype=np.float32)


def evaluate(weights: str | Path | None, images: str | Path, masks: str | Path, lpips_weights: str | None = None,
             fid_weights: str | None = None, engine: str = "auto", device: str = "cpu",
             threads: int | None = None, pairing: str = "all", batch: int = 8, max_images: int = 0,
             include: list[str] | None = None, progress: bool = True,
             baseline: str | None = None) -> dict[str, Any]:
    """Run the evaluation and return the report dict (see :func:`write_report`).

    ``baseline`` ('telea' or 'ns') evaluates OpenCV's classical inpainting instead of ``weights``.
    """
    from glama_deploy.engines import create_engine
    from training.mask_sets import load_mask_set, read_manifest

    if (weights is None) == (baseline is None):
        raise InputError("give either weights or a baseline, not both or neither")
    if baseline is None:
        weights = Path(weights)
        if not weights.is_file():
            raise InputError(f"{weights}: weights file not found")
    man = read_manifest(masks)
    mask_files = load_mask_set(masks)
    h, w = man["size"]
    imgs = load_images(images, h, w, max_images, include)
    lp = load_lpips(lpips_weights) if lpips_weights else None
    fid_net = load_fid_extractor(fid_weights) if fid_weights else None
    if baseline is not None:
        eng = baseline_engine(baseline)
        kind = eng.name
        weights = (f"baseline: OpenCV {baseline} (cv2.inpaint, radius {eng.radius})" if baseline != "pyramid"
                   else "baseline: the pyramid fill that prefill generators start from (no network)")
    else:
        kind = engine_kind(weights) if engine == "auto" else engine
        eng = create_engine(kind, str(weights), device=device, threads=threads)
    meta = getattr(eng, "metadata", {}) or {}

    pairs_total = sum(len(v) * (len(imgs) if pairing == "all" else 1) for v in mask_files.values())
    from tqdm import tqdm

    bar = tqdm(total=pairs_total, unit="img", disable=not progress, desc="evaluate")
    per_type: dict[str, dict[str, Any]] = {}
    t0 = time.time()
    for t, files in mask_files.items():
        masks_t = [read_mask(f, (h, w)) for f in files]
        if pairing == "all":
            jobs = [(i, j) for i in range(len(imgs)) for j in range(len(masks_t))]
        else:
            jobs = [(j % len(imgs), j) for j in range(len(masks_t))]
        ps, ss, ls, fake_feats, real_feats = [], [], [], [], []
        for s in range(0, len(jobs), batch):
            chunk = jobs[s:s + batch]
            x = _to_nchw([imgs[i][1] for i, _ in chunk])
            m = np.stack([masks_t[j] for _, j in chunk])[:, None].astype(np.float32)
            out = eng(x, m)
            for k in range(len(chunk)):
                pred = out[k].transpose(1, 2, 0)
                gt = x[k].transpose(1, 2, 0)
                ps.append(psnr(pred, gt))
                ss.append(ssim(pred, gt))
            if lp is not None:
                ls += lp(torch.from_numpy(out), torch.from_numpy(x)).tolist()
            if fid_net is not None:
                with torch.no_grad():
                    fake_feats.append(fid_net(torch.from_numpy(out)).reshape(len(chunk), -1).double().numpy())
                    real_feats.append(fid_net(torch.from_numpy(x)).reshape(len(chunk), -1).double().numpy())
            bar.update(len(chunk))
        per_type[t] = {
            "n": len(jobs),
            "psnr": float(np.mean(ps)), "psnr_std": float(np.std(ps)),
            "ssim": float(np.mean(ss)),
            "lpips": float(np.mean(ls)) if lp is not None else None,
            "fid": frechet_distance(np.concatenate(fake_feats), np.concatenate(real_feats))
            if fid_net is not None else None,
            "hole_fraction": float(np.mean([masks_t[j].mean() for _, j in jobs])),
        }
    bar.close()
    eng.close()
    mean = {k: (float(np.mean([v[k] for v in per_type.values()]))
                if all(v[k] is not None for v in per_type.values()) else None)
            for k in ("psnr", "ssim", "lpips", "fid")}
    return {
        "format": "glama-deploy/eval-report/v1",
        "weights": str(weights),
        "weights_metadata": {k: meta[k] for k in ("config", "step", "source", "training_mode", "mask_policy",
                                                  "losses", "perceptual") if k in meta},
        "engine": kind,
        "images": [n for n, _ in imgs],
        "image_folder": str(images),
        "mask_set": str(masks),
        "mask_size": [h, w],
        "mask_seed": man.get("seed"),
        "masks_per_type": man.get("count"),
        "pairing": pairing,
        "types": per_type,
        "mean": mean,
        "lpips": "computed" if lp is not None else NA,
        "fid": "computed" if fid_net is not None else NA,
        "seconds": round(time.time() - t0, 1),
    }


def _fmt(v: float | None, digits: int) -> str:
    return NA if v is None else f"{v:.{digits}f}"


def to_markdown(rep: dict[str, Any], title: str | None = None) -> str:
    types = list(rep["types"])
    md = rep.get("weights_metadata", {})
    if rep["engine"].startswith("opencv-"):
        lines = [f"# {title or 'Evaluation: ' + rep['engine']}", "", f"- {rep['weights']}"]
    else:
        lines = [f"# {title or 'Evaluation: ' + Path(rep['weights']).name}", ""]
        lines.append(f"- weights: `{rep['weights']}` ({md.get('config', '?')}, step {md.get('step', '?')}), "
                     f"engine {rep['engine']}")
    lines.append(f"- images: {len(rep['images'])} from `{rep['image_folder']}`, resized/center-cropped to "
                 f"{rep['mask_size'][1]}x{rep['mask_size'][0]}")
    lines.append(f"- masks: `{rep['mask_set']}` ({rep['masks_per_type']} per type, seed {rep['mask_seed']}), "
                 f"pairing {rep['pairing']}; metrics on the composite (known pixels pasted back)")
    lines += ["", "| metric | " + " | ".join(types) + " | mean |",
              "| --- |" + " --- |" * (len(types) + 1)]
    for key, label, digits in METRICS:
        row = [_fmt(rep["types"][t][key], digits) for t in types] + [_fmt(rep["mean"][key], digits)]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines.append("| pairs | " + " | ".join(str(rep["types"][t]["n"]) for t in types) + " | |")
    lines.append("| hole % | " + " | ".join(f"{100 * rep['types'][t]['hole_fraction']:.0f}" for t in types)
                 + " | |")
    lines.append("")
    return "\n".join(lines)


def report_paths(out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    if out.suffix.lower() in (".json", ".md"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".json"), out.with_name(out.name + ".md")


def write_report(rep: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    js, md = report_paths(out)
    atomic_write_bytes(js, (json.dumps(rep, indent=2) + "\n").encode())
    atomic_write_bytes(md, to_markdown(rep).encode())
    return js, md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.evaluate",
        description="Per-mask-type evaluation (PSNR, SSIM; LPIPS/FID with local weights) of a generator "
                    "on a folder of images and a fixed mask set; writes OUT.json and OUT.md.")
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", help=".safetensors/.ckpt (torch engine) or .onnx (onnxruntime)")
    which.add_argument("--baseline", choices=BASELINES,
                       help="evaluate OpenCV's classical inpainting (cv2.inpaint) instead, for comparison")
    ap.add_argument("--images", required=True, help="folder of evaluation images (searched recursively)")
    ap.add_argument("--masks", required=True, help="mask set directory from python -m training.masks")
    ap.add_argument("--out", required=True, help="report path without extension (OUT.json, OUT.md)")
    ap.add_argument("--lpips-weights", help="LPIPS (AlexNet, v0.1) weights: the torchvision AlexNet file and "
                                            "the lpips alex.pth heads, comma-separated (or one merged file)")
    ap.add_argument("--fid-weights", help="TorchScript feature extractor for FID (e.g. InceptionV3 pool3)")
    ap.add_argument("--engine", default="auto", choices=("auto", "torch", "onnxruntime"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads")
    ap.add_argument("--pairing", default="all", choices=("all", "cycle"),
                    help="all: every image with every mask; cycle: mask i with image i mod n")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-images", type=int, default=0, help="use only the first N images (0 = all)")
    ap.add_argument("--include", nargs="+", metavar="NAME",
                    help="use only these file names from --images (e.g. a run's data.holdout list)")
    ap.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from glama_deploy.engines import EngineError
    from glama_deploy.model.weights import WeightsError
    from training.mask_sets import MaskSetError

    try:
        rep = evaluate(args.weights, args.images, args.masks, args.lpips_weights, args.fid_weights,
                       engine=args.engine, device=args.device, threads=args.threads, pairing=args.pairing,
                       batch=args.batch, max_images=args.max_images, include=args.include,
                       progress=not (args.quiet or args.json), baseline=args.baseline)
        js, md = write_report(rep, args.out)
    except (InputError, DataError, MaskSetError, MetricWeightsError, WeightsError, EngineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print(to_markdown(rep))
        print(f"wrote {js} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
