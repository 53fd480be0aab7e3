"""Quality of the low-precision engines, measured one way for all of them.

    python -m benchmarks.precision_quality [--models bundled,lama-fourier] [--size 256] [--per-type 1]
                                           [--out benchmarks/results] [--cache-dir DIR] [--threads 1]

For each model: the fp32 onnxruntime graph (the shipped export) is the reference; the int8 QDQ
graph (``export.quantize``, calibrated on training photos) and torch bf16 autocast (``TorchEngine
(precision="bf16")``) are compared with it on the held-out photos of
training/configs/glama-small.yaml (never trained on, never calibrated on), square ``--size`` crops,
``--per-type`` masks of each General Mask type per photo (seeded). Per mask type:

  vs fp32   in-hole PSNR of the engine's float output against the fp32 output (dB; higher = closer)
  vs GT     in-hole PSNR of the 8-bit composite against the photo, next to fp32's (training.compare's
            metric); delta = engine minus fp32 (negative = worse)

Models: ``bundled`` (the trained glama-small) and ``lama-fourier`` with trained-scale random weights
(benchmarks.trained_scale: its vs-GT numbers mean nothing, its vs-fp32 numbers are the stress test:
18 residual blocks, activations in the hundreds). Writes OUT/precision_quality.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np

ENGINES = ("int8", "int8-asym", "bf16")
MODELS = ("bundled", "lama-fourier")


def model_files(model: str, cache: Path) -> dict:
    """Weights, fp32 ONNX and int8 QDQ ONNX of ``model`` (cached), the int8 recipe and file sizes."""
    import onnx

    from benchmarks.engines import prepare_int8, prepare_onnx, prepare_weights
    from benchmarks.trained_scale import trained_scale_weights
    from glama_deploy.bundled import DEFAULT_WEIGHTS

    if model == "bundled":
        weights, model_id = prepare_weights("small", str(DEFAULT_WEIGHTS), cache)
    else:
        weights = trained_scale_weights(model, cache)
        model_id = weights.stem
    fp32, _ = prepare_onnx(weights, model_id, "matmul", cache)
    int8, _ = prepare_int8(fp32)
    asym, _ = prepare_int8(fp32, symmetric=False)
    meta = {p.key: p.value for p in onnx.load(str(int8), load_external_data=False).metadata_props}
    return {"weights": str(weights), "fp32_onnx": str(fp32), "int8_onnx": str(int8), "int8_asym_onnx": str(asym),
            "recipe": json.loads(meta.get("quantization", "{}")),
            "bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}}


def engines_for(files: dict, threads: int) -> dict:
    """fp32 and int8 onnxruntime engines and the torch bf16 engine of one model."""
    from glama_deploy.engines.onnx_ import OnnxEngine
    from glama_deploy.engines.torch_ import TorchEngine

    return {"fp32": OnnxEngine(files["fp32_onnx"], threads=threads),
            "int8": OnnxEngine(files["int8_onnx"], threads=threads),
            "int8-asym": OnnxEngine(files["int8_asym_onnx"], threads=threads),
            "bf16": TorchEngine(files["weights"], precision="bf16", threads=threads)}


def measure(engines: dict, photos: list[Path], size: int, per_type: int, seed: int = 1) -> dict:
    """{type: {engine: {"vs_fp32": dB, "vs_gt": dB}, "fp32": {"vs_gt": dB}, "n": count}}."""
    from export.quantize import general_mask, square_crop
    from training.masks import MASK_TYPES
    from training.metrics import hole_psnr

    per: dict[str, dict[str, list]] = {t: {} for t in MASK_TYPES}
    for pi, photo in enumerate(sorted(photos)):
        image = square_crop(photo, size)
        for ti, tname in enumerate(MASK_TYPES):
            for k in range(per_type):
                mask = general_mask(ti, size, (seed, pi, ti, k))
                outs = {name: e(image, mask) for name, e in engines.items()}
                gt_u8 = np.rint(image * 255)
                for name, y in outs.items():
                    rec = per[tname].setdefault(name, [])
                    y8 = np.clip(np.rint(y * 255), 0, 255)
                    rec.append((hole_psnr(y, outs["fp32"], mask), hole_psnr(y8 / 255, gt_u8 / 255, mask)))
    table = {}
    for tname, by_engine in per.items():
        row = {"n": len(by_engine["fp32"])}
        for name, vals in by_engine.items():
            v = np.array(vals)
            row[name] = {"vs_gt": float(v[:, 1].mean())}
            if name != "fp32":
                row[name]["vs_fp32"] = float(v[:, 0].mean())
                row[name]["vs_fp32_min"] = float(v[:, 0].min())
                row[name]["delta_vs_gt"] = row[name]["vs_gt"] - row["fp32"]["vs_gt"]
        table[tname] = row
    return table


def to_markdown(rep: dict) -> str:
    L = [f"# Low-precision quality ({rep['created']})", "",
         f"Held-out photos ({len(rep['photos'])}: {', '.join(rep['photos'])}), {rep['size']}x{rep['size']} "
         f"centre crops, {rep['per_type']} mask(s) of each General Mask type per photo. vs fp32: in-hole PSNR "
         "against the fp32 onnxruntime output (float); vs GT: in-hole PSNR of the 8-bit composite against the "
         "photo; delta = engine minus fp32 (negative = worse). int8 = export.quantize QDQ (symmetric, the "
         "TensorRT-compatible file) on onnxruntime-CPU; int8-asym = the same with --asymmetric (uint8 activations "
         "with zero points, CPU-only); bf16 = torch CPU autocast (FourierUnit and prefill fp32).", ""]
    for name, m in rep["models"].items():
        r = m.get("recipe") or {}
        L += [f"## {name}", "", f"- weights: {Path(m['weights']).name}" + (f" ({m['note']})" if m.get("note") else ""),
              f"- int8 recipe: {r.get('format', '-')}; ops fed by DequantizeLinear {r.get('quantized_ops')}; "
              f"kept float "
              f"{r.get('kept_float')}; calibration {json.dumps(r.get('calibration', {}).get('method'))}, "
              f"{r.get('calibration', {}).get('images')} training photos at {r.get('calibration', {}).get('size')}",
              f"- file sizes: fp32 {m['bytes']['fp32'] / 1e6:.1f} MB, int8 {m['bytes']['int8'] / 1e6:.1f} MB", "",
              "| mask type | n | " + " | ".join(f"{e} vs fp32 dB (min)" for e in ENGINES) + " | fp32 vs GT dB | "
              + " | ".join(f"{e} vs GT (delta)" for e in ENGINES) + " |", "|---|---|" + "---|" * (2 * len(ENGINES) + 1)]
        for t, row in m["table"].items():
            L.append(f"| {t} | {row['n']} | " + " | ".join(
                f"{row[e]['vs_fp32']:.1f} ({row[e]['vs_fp32_min']:.1f})" for e in ENGINES)
                + f" | {row['fp32']['vs_gt']:.2f} | " + " | ".join(
                f"{row[e]['vs_gt']:.2f} ({row[e]['delta_vs_gt']:+.2f})" for e in ENGINES) + " |")
        L.append("")
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list from {', '.join(MODELS)}")
    ap.add_argument("--size", type=int, default=256, help="square crop side (multiple of 8)")
    ap.add_argument("--per-type", type=int, default=1, help="masks of each type per photo")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "glama-deploy" / "benchmarks"))
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models) or args.size % 8 or args.size < 64 or args.per_type < 1:
        print(f"error: need --models from {', '.join(MODELS)}, --size a multiple of 8 >= 64, --per-type >= 1",
              file=sys.stderr)
        return 2
    import torch

    from export.quantize import photo_split

    torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    holdout = photo_split()[1]
    rep = {"created": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "size": args.size,
           "per_type": args.per_type, "photos": sorted(p.name for p in holdout), "models": {}}
    for name in models:
        t = time.perf_counter()
        prep = model_files(name, cache)
        table = measure(engines_for(prep, args.threads), holdout, args.size, args.per_type)
        note = "trained-scale random weights: vs GT is meaningless" if name != "bundled" else "trained"
        rep["models"][name] = {**prep, "note": note, "table": table, "seconds": time.perf_counter() - t}
        print(f"{name}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision_quality.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    (out / "precision_quality.md").write_text(to_markdown(rep) + "\n")
    print(to_markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
