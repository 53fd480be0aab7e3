"""Export the generator to ONNX: dynamic batch/H/W, no DFT op, checked before it is written.

``python -m export.onnx --weights W --out model.onnx``

The FourierUnits are switched to the ``matmul`` spectral backend for the export, whose cos/sin
bases are built in the graph from the input's runtime shape, so one file serves every size.
The file only appears at ``--out`` once onnx.checker, the op checks and the parity checks passed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from glama_deploy.model import Generator
from glama_deploy.model.prefill import LEVELS as PREFILL_LEVELS
from glama_deploy.model.weights import WeightsError, load_generator
from glama_deploy.weights import resolve_weights

from .check import CheckError, check_model_file, parity

log = logging.getLogger(__name__)

INPUT_NAMES = ("image", "mask")
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
TWO_GB = 2**31
DIM_NAMES = {"batch": "batch", "8*h8": "height", "8*w8": "width"}


def _downgrade_pad_opset(model, target: int):
    """Lower an opset-18 graph to ``target`` (17).

    torch's dynamo exporter emits opset 18 and its down-converter has no adapter for ``Pad``. For
    our graph the ops whose signature changed between 17 and 18 are ``Pad`` (an optional ``axes``
    input was added) and ``Resize`` (three attributes added); without ``axes`` and with the new
    attributes at their defaults both versions mean the same thing. Anything else that differs is
    refused rather than mislabelled. (ReduceSum last changed in opset 13.)
    """
    changed_in_18 = {"Pad", "Split", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                     "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
                     "Resize", "ScatterND", "ScatterElements", "Col2Im", "BitwiseAnd", "BitwiseOr",
                     "BitwiseXor", "BitwiseNot", "CenterCropPad", "GroupNormalization",
                     "OptionalHasElement", "OptionalGetElement"}
    from onnx.helper import get_attribute_value

    domain = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if domain.version <= target:
        return model
    if domain.version != 18 or target != 17:
        raise CheckError(f"cannot lower opset {domain.version} to {target}")
    for node in model.graph.node:
        if node.op_type == "Pad":
            if len(node.input) > 3 and node.input[3]:
                raise CheckError("Pad node uses 'axes' (opset 18 only); cannot lower to opset 17")
            del node.input[3:]
        elif node.op_type == "Resize":
            # Resize-18 added antialias, axes and keep_aspect_ratio_policy; at their defaults it
            # means what Resize-13 means (the prefill pyramid's bilinear upsampling).
            defaults = {"antialias": 0, "keep_aspect_ratio_policy": b"stretch"}
            for a in list(node.attribute):
                if a.name == "axes" or (a.name in defaults and get_attribute_value(a) != defaults[a.name]):
                    raise CheckError(f"Resize node uses '{a.name}' (opset 18 only); cannot lower to opset 17")
                if a.name in defaults:
                    node.attribute.remove(a)
        elif node.op_type in changed_in_18:
            raise CheckError(f"op {node.op_type} changed in opset 18; cannot lower to {target}")
    domain.version = target
    return model


def _rename_dims(model) -> None:
    """Readable symbolic dims ('batch', 'height', 'width') on inputs, outputs and value infos."""
    values = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    for v in values:
        for d in v.type.tensor_type.shape.dim:
            if d.dim_param in DIM_NAMES:
                d.dim_param = DIM_NAMES[d.dim_param]


def to_onnx_proto(model: Generator, opset: int = DEFAULT_OPSET, example_size: int = 64):
    """Trace ``model`` (matmul spectral backend, on a copy) into an ONNX ModelProto."""
    if model.config.prefill:
        # torch.export specializes a dimension that is 1 in the example to a constant: the prefill
        # pyramid's coarsest levels must be at least 2 wide in the example to stay symbolic.
        example_size = max(example_size, 2**PREFILL_LEVELS)
    model = copy.deepcopy(model).cpu().eval().set_spectral_backend("matmul")
    for p in model.parameters():
        p.requires_grad_(False)
    img = torch.rand(1, 3, example_size, example_size)
    mask = (torch.rand(1, 1, example_size, example_size) > 0.5).float()
    batch = torch.export.Dim("batch", min=1, max=256)
    h8 = torch.export.Dim("h8", min=1, max=2048)  # H = 8*h8 up to 16384
    w8 = torch.export.Dim("w8", min=1, max=2048)
    shapes = {"image": {0: batch, 2: 8 * h8, 3: 8 * w8}, "mask": {0: batch, 2: 8 * h8, 3: 8 * w8}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(model, (img, mask), input_names=list(INPUT_NAMES),
                                    output_names=[OUTPUT_NAME], opset_version=18, dynamic_shapes=shapes,
                                    dynamo=True, external_data=False, verbose=False, report=False)
    proto = program.model_proto
    proto = _downgrade_pad_opset(proto, opset)
    _rename_dims(proto)
    return proto


def _save(proto, path: Path) -> None:
    import onnx

    if proto.ByteSize() < TWO_GB:
        onnx.save_model(proto, str(path))
    else:  # protobuf cannot hold > 2 GB: weights go to a side file
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")


def export_onnx(model: Generator, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                parity_sizes: tuple[tuple[int, int], ...] = ((256, 256), (248, 336)),
                tol: float = 1e-4, metadata: dict[str, str] | None = None) -> dict:
    """Export, check (onnx.checker, ops, parity vs torch), then move into place. Returns a report."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    proto = to_onnx_proto(model, opset)
    meta = {"config": json.dumps(model.config.to_dict()), "spectral_backend": "matmul",
            "inputs": "image (N,3,H,W) float32 [0,1]; mask (N,1,H,W) float32 1=hole; H,W multiple of 8",
            "output": "raw prediction (N,3,H,W) float32 [0,1]; composite known pixels yourself",
            "torch_version": torch.__version__, **(metadata or {})}
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, str(v)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".export-") as tmp:
        tmp_path = Path(tmp) / out.name
        _save(proto, tmp_path)
        ops = check_model_file(tmp_path)
        errs = parity(tmp_path, model, list(parity_sizes)) if parity_sizes else {}
        worst = max(errs.values(), default=0.0)
        if not np.isfinite(worst) or worst > tol:
            raise CheckError(f"ONNX/torch parity failed: max abs error {worst:.3e} > {tol:.0e} ({errs})")
        for f in Path(tmp).iterdir():  # model (and external data, if any)
            os.replace(f, out.parent / f.name)
    return {"out": str(out), "opset": opset, "bytes": out.stat().st_size, "ops": dict(ops),
            "parity_max_abs": errs, "config": model.config.name}


@contextlib.contextmanager
def captured_output(enabled: bool = True) -> Iterator[None]:
    """Send what torch's exporter and onnxscript's optimizer print (~300 lines, some from C++ straight
    to the file descriptors) to a temp file instead of the terminal."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True,
                    help=".safetensors, official LaMa .ckpt, or a model name (big-lama: downloaded once)")
    ap.add_argument("--offline", action="store_true", help="never download a named model (also GLAMA_OFFLINE=1)")
    ap.add_argument("--out", required=True, help="output .onnx path")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    ap.add_argument("--parity-sizes", default="256x256,248x336",
                    help="HxW sizes (multiples of 8) checked against torch; '' to skip")
    ap.add_argument("--tol", type=float, default=1e-4, help="max abs error allowed")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show the exporter's and optimizer's own output (hidden by default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sizes = tuple(tuple(int(v) for v in s.split("x")) for s in args.parity_sizes.split(",") if s)
        model, meta = load_generator(resolve_weights(args.weights, offline=args.offline or None))
        with captured_output(not args.verbose):
            report = export_onnx(model, args.out, opset=args.opset, parity_sizes=sizes, tol=args.tol,
                                 metadata={"source_weights": Path(args.weights).name,
                                           "weights_source": meta.get("source", "")})
    except (WeightsError, CheckError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        print(f"error: the ONNX export needs the 'export' extra (missing module {e.name!r}): "
              f"pip install -e \".[export]\"", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"wrote {report['out']} ({report['bytes'] / 1e6:.1f} MB, opset {report['opset']}); "
              f"parity max abs error {report['parity_max_abs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
