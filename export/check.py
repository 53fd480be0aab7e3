"""Checks an exported generator must pass: ONNX validity, op support, numerical parity.

``python -m export.check model.onnx [--weights W] [--tensorrt-parser]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

# Ops of our graph that TensorRT's ONNX parser (onnx-tensorrt, TensorRT 10.x) supports; see its
# docs/operators.md. Deliberately a small allow-list of what the generator needs, not the whole
# parser list: a new op in the graph must be checked against TensorRT before it is added here.
TENSORRT_SUPPORTED_OPS = frozenset({
    "Add", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Div", "Equal", "Expand", "Floor", "Gather", "Identity", "MatMul",
    "Mul", "Neg", "Not", "Or", "Pad", "Range", "Reciprocal", "Relu", "Reshape", "Shape", "Sigmoid",
    "Sin", "Slice", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
    # the prefill pyramid (glama_deploy/model/prefill.py): 2x2 AveragePool, bilinear Resize
    # (half_pixel), ReduceSum over H/W, Clip, Log (the base fill's logit); checked with the
    # TensorRT-RTX parser in tests/test_tensorrt.py
    "AveragePool", "Clip", "Log", "ReduceSum", "Resize",
    # the int8 QDQ model (export/quantize.py): explicit quantization, int8 symmetric (zero point 0)
    "QuantizeLinear", "DequantizeLinear",
    # its sub-pixel upsamplers (export/int8_graph.py): onnx-tensorrt's operator list has DepthToSpace
    # (both modes); the TensorRT-RTX parser accepts the int8 model in tests/test_quantize.py
    "DepthToSpace",
})
FORBIDDEN_OPS = frozenset({"DFT", "STFT"})


class CheckError(RuntimeError):
    """An exported model failed a check; the message says which and why."""


def op_histogram(model) -> Counter:
    ops: Counter = Counter()

    def walk(graph) -> None:
        for node in graph.node:
            ops[node.op_type] += 1
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
    walk(model.graph)
    for fn in model.functions:
        for node in fn.node:
            ops[node.op_type] += 1
    return ops


def check_ops(model) -> Counter:
    """Fail on DFT/STFT and on any op outside the TensorRT allow-list."""
    ops = op_histogram(model)
    bad = sorted(set(ops) & FORBIDDEN_OPS)
    if bad:
        raise CheckError(f"graph contains {bad}: TensorRT < 11.2 and onnxruntime's CUDA EP have no "
                         "DFT; export with the matmul spectral backend")
    unknown = sorted(set(ops) - TENSORRT_SUPPORTED_OPS)
    if unknown:
        raise CheckError(f"graph contains ops not on the TensorRT allow-list: {unknown}")
    return ops


def check_model_file(path: str | Path) -> Counter:
    """onnx.checker full check (with shape inference) + op checks."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # onnx raises ValidationError and friends
        raise CheckError(f"{path}: onnx.checker failed: {e}") from None
    return check_ops(onnx.load(str(path), load_external_data=False))


def parity(onnx_path: str | Path, model, sizes: list[tuple[int, int]], batch: int = 1,
           seed: int = 0, threads: int | None = None) -> dict[str, float]:
    """Max abs error between onnxruntime and torch (fft backend) on random image + mask."""
    import torch

    from glama_deploy.engines.onnx_ import OnnxEngine

    sess = OnnxEngine(onnx_path, threads=threads)
    rng = np.random.default_rng(seed)
    model = model.eval()
    prev = model.spectral_backend
    model.set_spectral_backend("fft")
    out = {}
    try:
        for h, w in sizes:
            img = rng.random((batch, 3, h, w), dtype=np.float32)
            mask = (rng.random((batch, 1, h, w)) > 0.6).astype(np.float32)
            got = sess._run(img, mask)
            with torch.inference_mode():
                ref = model(torch.from_numpy(img), torch.from_numpy(mask)).numpy()
            out[f"{h}x{w}"] = float(np.abs(got - ref).max())
    finally:
        model.set_spectral_backend(prev)
        sess.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx", help="exported generator (.onnx)")
    ap.add_argument("--weights", help="weights it was exported from: adds a parity check against torch")
    ap.add_argument("--sizes", default="256x256,248x336", help="parity sizes, HxW (multiples of 8)")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs error allowed in parity")
    ap.add_argument("--tensorrt-parser", action="store_true",
                    help="also parse with a TensorRT ONNX parser (tensorrt or tensorrt-rtx)")
    ap.add_argument("--json", action="store_true", help="print a JSON summary")
    args = ap.parse_args(argv)
    report: dict = {"model": args.onnx}
    try:
        report["ops"] = dict(check_model_file(args.onnx))
        if args.weights:
            from glama_deploy.model.weights import load_generator

            model, _ = load_generator(args.weights)
            sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
            report["parity_max_abs"] = errs = parity(args.onnx, model, sizes)
            worst = max(errs.values())
            if worst > args.tol:
                raise CheckError(f"parity failed: max abs error {worst:.2e} > {args.tol:.0e} ({errs})")
        if args.tensorrt_parser:
            from .tensorrt_parser import check_with_parser

            report["tensorrt_parser"] = check_with_parser(args.onnx)
    except (CheckError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else f"ok: {args.onnx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
