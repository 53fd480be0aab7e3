"""Build a TensorRT engine (.plan) from the exported generator ONNX.

``python -m export.tensorrt --onnx model.onnx --out model.plan [--min 1x256x256 --opt 1x512x512
--max 1x2048x2048] [--precision fp32|fp16|bf16] [--timing-cache F] [--workspace-gb N]``

Shapes are NxHxW (or HxW, batch 1); H and W must be multiples of 8. One optimization profile
covers both inputs. fp16/bf16 keep the spectral sub-graph (every FourierUnit: the DFT-as-matmul
and its 1x1 conv) and the normalisation layers in fp32:

- ``--typing strong`` (default): the ONNX is rewritten into an explicitly typed mixed-precision
  graph (export/precision.py) and built as a strongly typed network. Works on TensorRT 10 and 11
  and TensorRT-RTX (11 removed the FP16/BF16 builder flags and layer precision constraints).
- ``--typing weak`` (TensorRT 10 only): the fp32 graph plus the FP16/BF16 builder flag, with
  ``layer.precision``/``set_output_type`` = fp32 on the selected layers and
  OBEY_PRECISION_CONSTRAINTS so TensorRT must follow them.

``--precision int8`` takes the QDQ model of ``python -m export.quantize`` (explicit quantization:
the QuantizeLinear/DequantizeLinear pairs decide which layers run in int8; everything else, the
FourierUnits included, stays fp32). Strongly typed where available, else the INT8 builder flag.

TF32 is off unless ``--tf32``. The plan is the raw serialized engine (no header: Triton's
``tensorrt_plan`` backend loads it as is), written atomically; ``<plan>.json`` beside it records
the profile, precision, fp32 layer count, TensorRT version, GPU and the ONNX's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from glama_deploy.engines.base import EngineError
from glama_deploy.engines.tensorrt_ import cuda_device_name, get_logger, import_tensorrt, sidecar_path
from glama_deploy.fsutil import sha256_file

from .precision import LayerInfo, node_infos, select_fp32_layers, select_fp32_nodes, to_mixed_precision

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TYPINGS = ("auto", "strong", "weak")
BACKENDS = {"auto": None, "tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx", "tensorrt_rtx": "tensorrt_rtx"}
DEFAULT_MIN = (1, 256, 256)
DEFAULT_OPT = (1, 512, 512)
DEFAULT_MAX = (1, 2048, 2048)
MULTIPLE = 8
SIDECAR_FORMAT = "glama-deploy/tensorrt-plan"


class BuildError(RuntimeError):
    """The engine cannot be built; the message says why."""


# --------------------------------------------------------------------------- profile shapes
@dataclass(frozen=True)
class Profile:
    """One optimization profile: (batch, height, width) at min / opt / max."""

    min: tuple[int, int, int]
    opt: tuple[int, int, int]
    max: tuple[int, int, int]

    def input_shapes(self, channels: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) NCHW shapes of an input with ``channels`` channels."""
        return tuple((n, channels, h, w) for n, h, w in (self.min, self.opt, self.max))

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def __str__(self) -> str:
        return " / ".join(f"{k} {'x'.join(map(str, v))}" for k, v in (("min", self.min), ("opt", self.opt),
                                                                        ("max", self.max)))


def parse_shape(text: str, what: str = "shape") -> tuple[int, int, int]:
    """'1x512x512' (NxHxW) or '512x512' (HxW, batch 1) -> (N, H, W); ValueError naming ``what``."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not NxHxW or HxW (e.g. 1x512x512)") from None
    if len(dims) == 2:
        dims = [1, *dims]
    if len(dims) != 3:
        raise ValueError(f"{what}: {text!r} is not NxHxW or HxW (e.g. 1x512x512)")
    for name, v in zip(("batch", "height", "width"), dims, strict=True):
        if v < 1:
            raise ValueError(f"{what}: {name} must be >= 1, got {v}")
    for name, v in zip(("height", "width"), dims[1:], strict=True):
        if v % MULTIPLE:
            raise ValueError(f"{what}: {name} {v} is not a multiple of {MULTIPLE} (the generator's stride)")
    return tuple(dims)


def make_profile(min: str | tuple | None = None, opt: str | tuple | None = None,  # noqa: A002
                 max: str | tuple | None = None) -> Profile:  # noqa: A002
    """Profile from shapes (strings or tuples). Missing ones default to 1x256x256 / 1x512x512 /
    1x2048x2048, clamped to the given ones. ValueError unless min <= opt <= max in every dim."""
    def get(v, what):
        if v is None:
            return None
        return parse_shape(v, what) if isinstance(v, str) else parse_shape("x".join(map(str, v)), what)

    mn, op, mx = get(min, "--min"), get(opt, "--opt"), get(max, "--max")
    if mx is None:
        ref = op or mn
        mx = DEFAULT_MAX if ref is None else tuple(_max(a, b) for a, b in zip(DEFAULT_MAX, ref, strict=True))
    if mn is None:
        mn = tuple(_min(a, b) for a, b in zip(DEFAULT_MIN, op or mx, strict=True))
    if op is None:
        op = tuple(_max(lo, _min(d, hi)) for d, lo, hi in zip(DEFAULT_OPT, mn, mx, strict=True))
    for name, a, b, c in zip(("batch", "height", "width"), mn, op, mx, strict=True):
        if not a <= b <= c:
            raise ValueError(f"profile {name}: need min <= opt <= max, got {a} / {b} / {c}")
    return Profile(mn, op, mx)


def _min(a: int, b: int) -> int:
    return a if a < b else b


def _max(a: int, b: int) -> int:
    return a if a > b else b


# --------------------------------------------------------------------------- helpers
def write_atomic(path: str | os.PathLike, data) -> None:
    """Write bytes (or any buffer) to ``path`` via a temp file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a server may read the plan as another user
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parser_errors(parser, limit: int = 20) -> list[str]:
    """Readable ONNX parser errors: 'node 12 (my_dft, DFT): <description>'."""
    out = []
    for i in range(min(parser.num_errors, limit)):
        e = parser.get_error(i)
        where = ""
        try:
            if e.node() >= 0:
                where = f"node {e.node()} ({e.node_name()}, {e.node_operator()}): "
        except AttributeError:  # older bindings
            pass
        out.append(f"{where}{e.desc()} [{e.code()}]".replace("\n", " "))
    return out


def float_dtypes(trt) -> set:
    return {getattr(trt, n) for n in ("float32", "float16", "bfloat16") if hasattr(trt, n)}


def network_layers(network, trt) -> list[LayerInfo]:
    """LayerInfo records of a TensorRT network definition."""
    floats = float_dtypes(trt)
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        layers.append(LayerInfo(layer.name, str(layer.type).split(".")[-1], getattr(layer, "metadata", "") or "",
                                any(t is not None and t.dtype in floats for t in outs)))
    return layers


def has_weak_typing(trt) -> bool:
    """TensorRT 10 still has the precision builder flags; 11 and TensorRT-RTX do not."""
    flags = trt.BuilderFlag
    return all(hasattr(flags, f) for f in ("FP16", "BF16", "OBEY_PRECISION_CONSTRAINTS"))


def resolve_typing(typing: str, precision: str, trt) -> str:
    if typing not in TYPINGS:
        raise ValueError(f"typing must be one of {TYPINGS}, got {typing!r}")
    if typing == "weak" and not has_weak_typing(trt):
        raise BuildError(f"{trt.__name__} {trt.__version__} has no weak typing (BuilderFlag.FP16/BF16 and "
                         "precision constraints were removed in TensorRT 11); use --typing strong")
    if typing == "auto":
        strong_ok = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") or not has_weak_typing(trt)
        return "strong" if strong_ok or precision == "fp32" else "weak"
    return typing


def build_sidecar(*, plan_path: str | os.PathLike, plan_sha256: str, plan_bytes: int, onnx_path: str | os.PathLike,
                  onnx_sha256: str, profile: Profile, input_shapes: dict[str, tuple], precision: str, typing: str,
                  fp32_nodes: dict[str, str], fp32_layers: int, trt_module: str, trt_version: str,
                  gpu: str | None, tf32: bool, workspace_gb: float | None, timing_cache: str | None,
                  build_seconds: float) -> dict:
    """The JSON written beside the plan (pure: no TensorRT needed)."""
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "plan": Path(plan_path).name,
        "plan_bytes": int(plan_bytes),
        "plan_sha256": plan_sha256,
        "onnx": {"path": Path(onnx_path).name, "sha256": onnx_sha256},
        "profile": profile.to_dict(),
        "inputs": {name: {"min": list(s[0]), "opt": list(s[1]), "max": list(s[2])}
                   for name, s in input_shapes.items()},
        "precision": precision,
        "typing": typing,
        "fp32_layers": int(fp32_layers),
        "fp32_nodes": len(fp32_nodes),
        "fp32_reasons": dict(Counter(fp32_nodes.values())),
        "tf32": bool(tf32),
        "tensorrt": {"module": trt_module, "version": trt_version},
        "gpu": gpu,
        "workspace_gb": workspace_gb,
        "timing_cache": timing_cache,
        "build_seconds": round(float(build_seconds), 2),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def precision_nodes(model, precision: str, keep_norm: bool = True) -> dict[str, str]:
    """ONNX nodes kept fp32 for ``precision`` (empty for fp32). bf16 also keeps ConvTranspose in
    fp32: TensorRT-RTX 1.7 has no bf16 deconvolution (build fails: cannot infer output types)."""
    if precision in ("fp32", "int8"):  # int8: the QDQ pairs of the file decide, the rest is fp32
        return {}
    nodes = node_infos(model)
    chosen = select_fp32_nodes(nodes, keep_norm=keep_norm)
    if precision == "bf16":
        chosen.update({n.name: "bf16-deconv" for n in nodes if n.op_type == "ConvTranspose" and n.name not in chosen})
    return chosen


# --------------------------------------------------------------------------- build
def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, *, profile: Profile | None = None,
                 precision: str = "fp32", typing: str = "auto", timing_cache: str | os.PathLike | None = None,
                 workspace_gb: float | None = None, keep_norm: bool = True, tf32: bool = False,
                 backend: str = "auto", opt_level: int | None = None) -> dict:
    """Parse, configure, build and write ``out`` + ``out.json``. Returns the sidecar dict."""
    import onnx

    onnx_path, out = Path(onnx_path), Path(out)
    profile = profile or make_profile()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    if not onnx_path.is_file():
        raise BuildError(f"{onnx_path}: ONNX model not found")
    try:
        trt, trt_name = import_tensorrt(BACKENDS[backend], allow=("tensorrt",))
    except EngineError as e:
        raise BuildError(f"{e}. On a machine without a GPU, `--backend tensorrt-rtx` builds a TensorRT-RTX plan "
                         "(for the RTX runtime, not for Triton)") from None
    if trt_name == "tensorrt_rtx":
        log.warning("building with TensorRT-RTX %s: the plan runs on the TensorRT-RTX runtime only, "
                    "not in Triton's tensorrt_plan backend", trt.__version__)
    typing = resolve_typing(typing, precision, trt)
    onnx_sha = sha256_file(onnx_path)

    model = onnx.load(str(onnx_path))
    qdq = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    if precision == "int8" and not qdq:
        raise BuildError(f"{onnx_path}: no QuantizeLinear nodes; --precision int8 takes the QDQ model of "
                         "`python -m export.quantize`")
    if precision != "int8" and qdq:
        raise BuildError(f"{onnx_path}: a QDQ (int8) model; build it with --precision int8")
    fp32_nodes = precision_nodes(model, precision, keep_norm)
    if precision in ("fp16", "bf16") and typing == "strong":
        model = to_mixed_precision(model, fp32_nodes, precision)
    data = model.SerializeToString()
    del model

    logger = get_logger(trt)
    logger.clear()
    builder = trt.Builder(logger)
    flags = 0
    if typing == "strong" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data, str(onnx_path)):
        errs = parser_errors(parser) or logger.errors[-5:]
        raise BuildError(f"{onnx_path}: {trt_name} {trt.__version__} ONNX parser failed:\n  " + "\n  ".join(errs))
    del data

    config = builder.create_builder_config()
    input_shapes = {}
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        dims = tuple(t.shape)
        if len(dims) != 4 or dims[1] < 1:
            raise BuildError(f"{onnx_path}: input {t.name} has shape {dims}; expected (N, C, H, W) with fixed C")
        shapes = profile.input_shapes(dims[1])
        for d, fixed in enumerate(dims):
            if fixed >= 0 and any(s[d] != fixed for s in shapes):
                raise BuildError(f"{onnx_path}: input {t.name} has a fixed dim {d} = {fixed} but the profile asks "
                                 f"{[s[d] for s in shapes]}; re-export with dynamic shapes or match the profile")
        opt_profile.set_shape(t.name, *shapes)
        input_shapes[t.name] = shapes
    config.add_optimization_profile(opt_profile)
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if opt_level is not None:
        config.builder_optimization_level = int(opt_level)

    layers = network_layers(network, trt)
    fp32_layer_names = select_fp32_layers(layers, fp32_nodes) if fp32_nodes else []
    if typing == "weak" and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization: the Q/DQ layers set the scales
    elif typing == "weak" and precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        wanted = set(fp32_layer_names)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name not in wanted:
                continue
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in float_dtypes(trt):
                    layer.set_output_type(j, trt.float32)

    cache = None
    use_cache = timing_cache is not None and trt_name != "tensorrt_rtx"  # a no-op (deprecated) in RTX
    if timing_cache is not None and not use_cache:
        log.warning("TensorRT-RTX has no timing cache; ignoring --timing-cache")
    if use_cache:
        blob = Path(timing_cache).read_bytes() if Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, False):
            log.warning("%s: timing cache rejected (other TensorRT version or GPU?); starting a new one", timing_cache)
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)

    log.info("building %s engine (%s, %s typing, %d fp32 layers) with %s %s; profile %s",
             precision, onnx_path.name, typing, len(fp32_layer_names), trt_name, trt.__version__, profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise BuildError(f"{onnx_path}: {trt_name} {trt.__version__} failed to build the engine: "
                         + ("; ".join(logger.errors[-5:]) or "no message"))
    plan = memoryview(serialized)
    if use_cache:
        write_atomic(timing_cache, memoryview(config.get_timing_cache().serialize()))
    write_atomic(out, plan)
    sidecar = build_sidecar(
        plan_path=out, plan_sha256=hashlib.sha256(plan).hexdigest(), plan_bytes=plan.nbytes, onnx_path=onnx_path,
        onnx_sha256=onnx_sha, profile=profile, input_shapes=input_shapes, precision=precision, typing=typing,
        fp32_nodes=fp32_nodes, fp32_layers=len(fp32_layer_names), trt_module=trt_name,
        trt_version=trt.__version__, gpu=cuda_device_name(0), tf32=tf32, workspace_gb=workspace_gb,
        timing_cache=str(timing_cache) if use_cache else None, build_seconds=seconds)
    write_atomic(sidecar_path(out), (json.dumps(sidecar, indent=2) + "\n").encode())
    return sidecar


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx", required=True, help="exported generator (python -m export.onnx)")
    ap.add_argument("--out", required=True, help="output .plan (a .plan.json sidecar is written beside it)")
    ap.add_argument("--min", help=f"smallest NxHxW (default {'x'.join(map(str, DEFAULT_MIN))})")
    ap.add_argument("--opt", help=f"NxHxW TensorRT tunes for (default {'x'.join(map(str, DEFAULT_OPT))})")
    ap.add_argument("--max", help=f"largest NxHxW (default {'x'.join(map(str, DEFAULT_MAX))})")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--typing", choices=TYPINGS, default="auto",
                    help="strong: mixed-precision ONNX + strongly typed network (TensorRT 10/11); "
                         "weak: builder flag + layer precision constraints (TensorRT 10 only)")
    ap.add_argument("--fp16-norm", action="store_true",
                    help="let normalisation layers run in fp16/bf16 too (default: fp32)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for fp32 layers (default off)")
    ap.add_argument("--timing-cache", help="timing cache file: loaded if present, saved after the build")
    ap.add_argument("--workspace-gb", type=float, help="builder workspace limit in GiB")
    ap.add_argument("--opt-level", type=int, choices=range(6), help="builder optimization level (default 3)")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="auto",
                    help="tensorrt (default) or tensorrt-rtx (builds without a GPU; RTX runtime only)")
    ap.add_argument("--json", action="store_true", help="print the sidecar as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        profile = make_profile(args.min, args.opt, args.max)
        meta = build_engine(args.onnx, args.out, profile=profile, precision=args.precision, typing=args.typing,
                            timing_cache=args.timing_cache, workspace_gb=args.workspace_gb,
                            keep_norm=not args.fp16_norm, tf32=args.tf32, backend=args.backend,
                            opt_level=args.opt_level)
    except (BuildError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(meta, indent=2))
    else:
        print(f"wrote {args.out} ({meta['plan_bytes'] / 1e6:.1f} MB, {meta['precision']}, {meta['fp32_layers']} fp32 "
              f"layers, {meta['tensorrt']['module']} {meta['tensorrt']['version']}, {meta['build_seconds']} s) "
              f"and {sidecar_path(args.out).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
