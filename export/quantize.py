"""int8 QDQ ONNX from the exported generator: one file for onnxruntime-CPU (VNNI) and TensorRT.

    python -m export.quantize glama.onnx -o glama.int8.onnx [--photos DIR ...] [--calib 16]
                              [--size 256] [--method percentile] [--percentile 99.99]
                              [--exclude NODE ...] [--float-upsamplers] [--json]

Recipe (the defaults; measured in benchmarks/results/precision_quality.md):
  - exact float rewrites first (:mod:`export.int8_graph`): BatchNorm after each FFC Add folded into
    its two convs, and the ConvTranspose upsamplers turned into sub-pixel convs (Conv + DepthToSpace),
    so every convolution has an int8 kernel and the int8 chain runs conv -> add -> relu -> conv;
  - static quantization, QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized
    op), so TensorRT builds it with explicit quantization and onnxruntime fuses it to int8 kernels;
  - Conv, and the Relu and Add between convs inside the FFC blocks; weights int8 per output channel,
    symmetric; biases float (TensorRT's parser refuses an int32 DequantizeLinear; onnxruntime
    quantizes them itself when it fuses QLinearConv); activations int8 *symmetric* (zero point 0):
    TensorRT's explicit quantization accepts nothing else. On the CPU provider
    :class:`glama_deploy.engines.onnx_.OnnxEngine` specializes the graph at load
    (:mod:`glama_deploy.engines.qdq_cpu`: uint8 grids, a Relu output at twice the resolution, Relus
    folded into the quantization); ``--asymmetric`` writes a CPU-only file with calibrated zero points;
  - kept float: the whole FourierUnit (DFT-as-matmul basis, MatMuls, spectral 1x1 conv) and the
    prefill pyramid, selected by :func:`export.precision.select_fp32_nodes` exactly as the fp16
    TensorRT export keeps them in fp32; the generator's own output ops (the logit sum of prefill
    models); the last conv (64 -> 3 channels at full resolution: onnxruntime's int8 kernel was no
    faster there, and it is the one conv whose error lands on the output unfiltered;
    ``--quantize-last`` to quantize it); plus ``--exclude`` nodes and ``--float-upsamplers``;
  - calibration: training photos (never the held-out ones) cut to ``--size`` squares, each with a
    General Mask hole (the seven NTIRE types in turn, seeded); ranges at the 99.99th percentile of
    each tensor's magnitudes (``--method minmax`` keeps every outlier in range: on trained-scale
    lama-fourier that cost 2.5-3 dB against fp32; 99.999 cost 1.3 dB, 99.95 clipped too much).
The recipe and the calibration set are written into the model's metadata (``quantization``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATA_CONFIG = ROOT / "training" / "configs" / "glama-small.yaml"
METHODS = ("minmax", "entropy", "percentile")
OP_TYPES = ("Conv", "Relu", "Add", "DepthToSpace")
# element-wise ops quantized only inside these modules (scope metadata of the exporter)
ELEMENTWISE_SCOPE = "glama_deploy.model.ffc."
METADATA_KEY = "quantization"
DEFAULT_PERCENTILE = 99.99


class QuantizeError(ValueError):
    """Bad input to the quantizer (message names the file or option)."""


# ----------------------------------------------------------------------------- photos + masks
def photo_split(config: str | os.PathLike = DATA_CONFIG) -> tuple[list[Path], list[Path]]:
    """(training photos, held-out photos) of a training config: calibration uses the first, quality
    is measured on the second; the config's test photos (``data.exclude``) are in neither."""
    from training.config import load_config
    from training.data import find_images, split_holdout

    cfg = load_config(config)
    roots = [r if Path(r).is_absolute() else str(ROOT / r) for r in cfg.data.root]
    paths = find_images(roots)
    if cfg.data.exclude:
        paths, _ = split_holdout(paths, roots, cfg.data.exclude)
    return split_holdout(paths, roots, cfg.data.holdout)


def square_crop(path: Path, size: int) -> np.ndarray:
    """(1,3,size,size) float32 in [0,1]: the photo's short side resized to ``size``, centre crop."""
    from training.data import center_crop, read_rgb_u8

    img = center_crop(read_rgb_u8(Path(path)), size, size)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def general_mask(kind: int, size: int, seed: Sequence[int]) -> np.ndarray:
    """(1,1,size,size) float32 hole (1) of the ``kind``-th General Mask type, drawn from ``seed``."""
    from training.masks import MASK_TYPES

    gen = list(MASK_TYPES.values())[kind % len(MASK_TYPES)]()
    return gen(size, size, np.random.default_rng(list(seed)))[None, None].astype(np.float32)


def calibration_feeds(photos: Sequence[Path], n: int, size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """``n`` feeds {image, mask}: photos in turn (sorted), mask types in turn, seeded per index."""
    photos = sorted(photos)
    if not photos:
        raise QuantizeError("no calibration photos")
    return [{"image": square_crop(photos[i % len(photos)], size), "mask": general_mask(i, size, (seed, i))}
            for i in range(n)]


class FeedReader:
    """onnxruntime CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._it: Iterator = iter(feeds)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


# ----------------------------------------------------------------------------- node selection
def excluded_nodes(model, extra: Sequence[str] = (), keep_last: bool = False,
                   float_upsamplers: bool = False) -> dict[str, str]:
    """Node name -> why it stays float: the fp16 export's fp32 selection (FourierUnit, prefill;
    norms are not quantized anyway), ``extra`` names, and with ``keep_last`` the last conv."""
    from export.precision import node_infos, select_fp32_nodes

    nodes = node_infos(model)
    out = select_fp32_nodes(nodes, keep_norm=False)
    names = {n.name for n in nodes}
    unknown = [e for e in extra if e not in names]
    if unknown:
        raise QuantizeError(f"--exclude: no node named {unknown[0]!r} in the model")
    out.update({e: "excluded" for e in extra})
    for n in nodes:  # Add/Relu outside the FFC blocks: the generator's output arithmetic stays float
        if n.op_type in ("Add", "Relu") and n.scope and ELEMENTWISE_SCOPE not in n.scope and n.name not in out:
            out[n.name] = "output"
    if float_upsamplers:  # the sub-pixel convs of export.int8_graph, or ConvTranspose
        for n in nodes:
            if n.op_type == "ConvTranspose" or (n.op_type == "Conv" and n.name.endswith("_subpixel")):
                out[n.name] = "upsampler"
    if keep_last:
        convs = [n.name for n in nodes if n.op_type in ("Conv", "ConvTranspose")]
        if convs:
            out[convs[-1]] = "last-conv"
    return out


def quantized_ops(model) -> dict[str, int]:
    """Op histogram of the float ops that read a DequantizeLinear output (what runs in int8)."""
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    hist: dict[str, int] = {}
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and n.input and \
                producer.get(n.input[0]) == "DequantizeLinear":
            hist[n.op_type] = hist.get(n.op_type, 0) + 1
    return hist


# ----------------------------------------------------------------------------- quantize
def quantize_onnx(src: str | os.PathLike, out: str | os.PathLike, *, photos: Sequence[Path] | None = None,
                  calib: int = 16, size: int = 256, method: str = "percentile", exclude: Sequence[str] = (),
                  keep_last: bool = True, seed: int = 0,
                  symmetric: bool = True, rewrite: bool = True, float_upsamplers: bool = False,
                  percentile: float = DEFAULT_PERCENTILE) -> dict:
    """Write the int8 QDQ model for ``src`` to ``out``; returns the recipe (also in the metadata).

    ``symmetric=False``: uint8 activations with a zero point from the calibration range (a Relu
    output then uses all 256 levels, and Relu folds into the quantization): more accurate and
    faster on onnxruntime-CPU, but TensorRT refuses non-zero zero points (CPU-only file)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from export.int8_graph import rewrite_for_int8

    src, out = Path(src), Path(out)
    if not src.is_file():
        raise QuantizeError(f"{src}: ONNX model not found")
    if method not in METHODS:
        raise QuantizeError(f"--method {method!r}: choose from {', '.join(METHODS)}")
    if method == "percentile" and not 50.0 < percentile <= 100.0:
        raise QuantizeError(f"--percentile {percentile}: need a value in (50, 100]")
    if calib < 1 or size < 32 or size % 8:
        raise QuantizeError("need --calib >= 1 and --size a multiple of 8, at least 32")
    if photos is None:
        photos = photo_split()[0]
    t0 = time.perf_counter()
    feeds = calibration_feeds(photos, calib, size, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        # shape inference + onnxruntime's basic graph optimisations (constant folding, Conv+BN)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        rewrites = rewrite_for_int8(model) if rewrite else {}
        if rewrite:
            onnx.save_model(model, str(pre))
        skip = excluded_nodes(model, exclude, keep_last, float_upsamplers)
        ops = list(OP_TYPES)
        calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]
        qpath = Path(tmp) / out.name
        quantize_static(str(pre), str(qpath), FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=ops,
                        nodes_to_exclude=sorted(skip), calibrate_method=calib_method,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                                       "QuantizeBias": False, "CalibPercentile": percentile})
        qmodel = onnx.load(str(qpath))
        reasons: dict[str, int] = {}
        for r in skip.values():
            reasons[r] = reasons.get(r, 0) + 1
        recipe = {
            "format": "QDQ; int8 weights per output channel (symmetric), float biases; " + (
                "int8 activations symmetric (zero point 0)" if symmetric else
                "uint8 activations asymmetric (onnxruntime-CPU only: TensorRT needs zero point 0)"),
            "op_types": ops, "quantized_ops": quantized_ops(qmodel),
            "kept_float": reasons, "rewrites": rewrites,
            "excluded_extra": list(exclude) + (["last conv"] if keep_last else []),
            "calibration": {"method": method, **({"percentile": percentile} if method == "percentile" else {}),
                            "images": calib, "size": size, "seed": seed,
                            "photos": sorted({Path(p).name for p in sorted(photos)[:calib]}),
                            "masks": "General Mask types (training.masks.MASK_TYPES) in turn, rng [seed, index]"},
            "source": src.name, "onnxruntime": __import__("onnxruntime").__version__,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        entry = qmodel.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(recipe)
        onnx.save_model(qmodel, str(qpath))
        os.replace(qpath, out)
    return recipe


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", help="the fp32 export (python -m export.onnx)")
    ap.add_argument("-o", "--out", help="output path (default: <onnx stem>.int8.onnx beside it)")
    ap.add_argument("--photos", nargs="+", help="calibration photo folders (default: the training photos of "
                                                "training/configs/glama-small.yaml, held-out ones left out)")
    ap.add_argument("--calib", type=int, default=16, help="calibration images (default 16)")
    ap.add_argument("--size", type=int, default=256, help="calibration crop side (default 256)")
    ap.add_argument("--method", default="percentile", help=f"calibration: {', '.join(METHODS)} (default percentile)")
    ap.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE,
                    help=f"percentile method: the range covers this share of magnitudes (default {DEFAULT_PERCENTILE})")
    ap.add_argument("--exclude", nargs="*", default=[], help="more node names to keep float")
    ap.add_argument("--quantize-last", action="store_true", help="quantize the last conv too (default: float)")
    ap.add_argument("--float-upsamplers", action="store_true", help="keep the decoder's upsampling convs float "
                    "(closer to fp32, slower)")
    ap.add_argument("--no-rewrite", action="store_true", help="quantize the graph as exported (no BatchNorm "
                    "folding after Add, ConvTranspose kept and float)")
    ap.add_argument("--asymmetric", action="store_true",
                    help="uint8 activations with zero points: faster and closer on onnxruntime-CPU, refused by "
                         "TensorRT (default: symmetric int8, one file for both)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print the recipe as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out) if args.out else Path(args.onnx).with_suffix(".int8.onnx")
    try:
        photos = None
        if args.photos:
            from training.data import DataError, find_images

            try:
                photos = find_images(args.photos)
            except DataError as e:
                raise QuantizeError(str(e)) from None
        recipe = quantize_onnx(args.onnx, out, photos=photos, calib=args.calib, size=args.size,
                               method=args.method, exclude=args.exclude, keep_last=not args.quantize_last,
                               float_upsamplers=args.float_upsamplers, rewrite=not args.no_rewrite,
                               percentile=args.percentile, seed=args.seed, symmetric=not args.asymmetric)
    except QuantizeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"out": str(out), **recipe}, indent=2))
    else:
        print(f"wrote {out}: int8 {recipe['quantized_ops']}, kept float {recipe['kept_float']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
