"""The engines a benchmark compares, how to build them, and the model files they need.

Every engine is described by a plain, JSON-serialisable *spec* (``dict``) so that the same engine
can be rebuilt in a subprocess (memory is measured in fresh processes, see :mod:`benchmarks.run`).

==============  ==========================================================================
name            what runs
==============  ==========================================================================
torch-fft       TorchEngine, eager PyTorch, FourierUnits on ``torch.fft`` (the reference)
torch-matmul    TorchEngine, eager PyTorch, FourierUnits as DFT-by-matmul
ort-matmul      OnnxEngine on the shipped export (matmul DFT, opset 17, dynamic N/H/W)
ort-dft         OnnxEngine on a comparison export with ONNX ``DFT`` ops (opset 18, dynamic)
ort-int8        OnnxEngine on the int8 QDQ model of ``export.quantize`` (from the matmul export)
ort-int8-asym   the same with ``--asymmetric`` uint8 activations (onnxruntime-CPU only file)
torch-bf16      TorchEngine, torch.fft, CPU autocast bf16 (FourierUnit and prefill fp32)
tensorrt        TensorRTEngine on a plan built from the matmul export (NVIDIA GPU only)
triton          a Triton server (``--triton-url``), measured by :mod:`benchmarks.triton_bench`
==============  ==========================================================================
"""

from __future__ import annotations

import copy
import glob
import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

from glama_deploy.bundled import ASSETS
from glama_deploy.fsutil import sha256_file

log = logging.getLogger(__name__)

LOCAL_ENGINES = ("torch-fft", "torch-matmul", "ort-matmul", "ort-dft", "ort-int8", "ort-int8-asym", "torch-bf16")
LOW_PRECISION = ("ort-int8", "ort-int8-asym", "torch-bf16")  # not bit-compatible with torch-fft: compared by PSNR
ALL_ENGINES = LOCAL_ENGINES + ("tensorrt", "triton")
DEFAULT_ENGINES = tuple(e for e in ALL_ENGINES if e != "ort-int8-asym")  # the CPU-only variant on request
DESCRIPTIONS = {
    "torch-fft": "PyTorch eager, torch.fft spectral path",
    "torch-matmul": "PyTorch eager, DFT as matmul",
    "ort-matmul": "onnxruntime, matmul-DFT graph (the shipped export, opset 17)",
    "ort-dft": "onnxruntime, native ONNX DFT graph (comparison only, opset 18)",
    "ort-int8": "onnxruntime, int8 QDQ graph (export.quantize; FourierUnit fp32)",
    "ort-int8-asym": "onnxruntime, int8 QDQ graph with asymmetric uint8 activations (CPU-only file)",
    "torch-bf16": "PyTorch eager, torch.fft, CPU autocast bf16 (FourierUnit fp32)",
    "tensorrt": "TensorRT plan from the matmul-DFT graph",
    "triton": "Triton Inference Server over HTTP/gRPC",
}
DFT_OPSET = 18  # DFT-17 semantics; opset 20 (DFT-20) with dynamic H/W fails in onnxruntime
DFT_EXPORT_VERSION = 1  # bump when export_dft_onnx changes (part of the cache key)


def build_engine(spec: dict, threads: int | None = None, device: str = "cpu"):
    """Instantiate the engine a spec describes (in this process)."""
    kind = spec["kind"]
    if kind == "torch":
        from glama_deploy.engines.torch_ import TorchEngine

        return TorchEngine(spec["weights"], device=device, spectral_backend=spec["spectral_backend"],
                           threads=threads, precision=spec.get("precision", "fp32"))
    if kind == "onnxruntime":
        from glama_deploy.engines.onnx_ import OnnxEngine

        return OnnxEngine(spec["onnx"], device=device, threads=threads)
    if kind == "tensorrt":
        from glama_deploy.engines import create_engine

        return create_engine("tensorrt", spec["plan"])
    raise ValueError(f"engine kind {kind!r} cannot be built locally")


# ----------------------------------------------------------------------------- model files
def _atomic_target(path: Path):
    """A temp path beside ``path`` (same filesystem, so os.replace is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets normal permissions
    return Path(tmp)


def code_digest(*extra: str) -> str:
    """Hash of the sources that define the network (glama_deploy/model/*.py) and of ``extra``
    files (repo-relative): a cached weights file or export is reused only while they are unchanged."""
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "glama_deploy" / "model").glob("*.py")) + [root / e for e in extra]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:10]


def prepare_weights(config: str, weights: str | None, cache_dir: Path, seed: int = 0) -> tuple[Path, str]:
    """The safetensors file every engine is built from, and a short id for cache keys.

    With ``weights`` given it is used as is; else the bundled ``glama_deploy/assets/glama-<config>
    .safetensors`` if it exists; otherwise the generator is built with seeded random weights (speed
    does not depend on the values) and written once into the cache.
    """
    import torch

    bundled = ASSETS / f"glama-{config}.safetensors"
    if not weights and bundled.is_file():  # the shipped weights (glama-small) when there are some
        weights = str(bundled)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weights file not found")
        return path, f"{path.stem}-{sha256_file(path)[:12]}"
    from glama_deploy.model import build_generator
    from glama_deploy.model.weights import save_weights

    path = cache_dir / f"{config}-seed{seed}-{code_digest()}-torch{torch.__version__}.safetensors"
    if not path.is_file():
        torch.manual_seed(seed)
        model = build_generator(config).eval()
        save_weights(model, path, source=f"benchmarks: random init, seed {seed}")
        _prune(cache_dir, f"{config}-seed{seed}-*.safetensors", keep=path)
    return path, path.stem


def _prune(folder: Path, pattern: str, keep: Path) -> None:
    """Delete cache entries made by older model sources (same pattern, other digest)."""
    for old in folder.glob(pattern):
        if old != keep and old.is_file():
            log.info("removing stale cache entry %s", old)
            old.unlink(missing_ok=True)
            if old.suffix == ".safetensors":  # and the exports made from those weights
                for export in folder.glob(glob.escape(old.stem) + "-*.onnx"):
                    export.unlink(missing_ok=True)


def export_dft_onnx(model, path: str | os.PathLike, opset: int = DFT_OPSET) -> Path:
    """Export ``model`` with the ``fft`` spectral backend: the graph keeps ONNX ``DFT`` ops.

    For comparison with the matmul graph only (onnxruntime's CUDA EP and TensorRT < 11.2 have no
    DFT kernel). Dynamic batch/H/W with the same recipe as ``export.onnx.to_onnx_proto``.
    """
    import onnx
    import torch

    path = Path(path)
    model = copy.deepcopy(model).cpu().eval().set_spectral_backend("fft")
    for p in model.parameters():
        p.requires_grad_(False)
    image = torch.rand(1, 3, 64, 64)
    mask = (torch.rand(1, 1, 64, 64) > 0.5).float()
    batch = torch.export.Dim("batch", min=1, max=256)
    h8 = torch.export.Dim("h8", min=1, max=2048)
    w8 = torch.export.Dim("w8", min=1, max=2048)
    shapes = {"image": {0: batch, 2: 8 * h8, 3: 8 * w8}, "mask": {0: batch, 2: 8 * h8, 3: 8 * w8}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(model, (image, mask), input_names=["image", "mask"],
                                    output_names=["output"], opset_version=opset, dynamic_shapes=shapes,
                                    dynamo=True, external_data=False, verbose=False, report=False)
    proto = program.model_proto
    ops = {n.op_type for n in proto.graph.node}
    if "DFT" not in ops:
        raise RuntimeError("the fft-backend export contains no DFT op; the comparison would be void")
    onnx.checker.check_model(proto)
    tmp = _atomic_target(path)
    try:
        onnx.save_model(proto, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def prepare_onnx(weights_path: Path, model_id: str, backend: str, cache_dir: Path) -> tuple[Path, float]:
    """The cached ONNX export for ``backend`` ("matmul": export.onnx; "fft": DFT graph).

    Returns the path and the export time in seconds (0.0 on a cache hit)."""
    key = code_digest("export/onnx.py") if backend == "matmul" else f"{code_digest()}-v{DFT_EXPORT_VERSION}"
    path = cache_dir / f"{model_id}-{backend}-{key}.onnx"
    if path.is_file():
        return path, 0.0
    from glama_deploy.model.weights import load_generator

    model, _ = load_generator(weights_path)
    t = time.perf_counter()
    if backend == "matmul":
        from export.onnx import export_onnx

        export_onnx(model, path, parity_sizes=())  # parity is reported per row by the benchmark
    else:
        export_dft_onnx(model, path)
    _prune(cache_dir, f"{model_id}-{backend}-*.onnx", keep=path)
    return path, time.perf_counter() - t


def prepare_int8(onnx_path: Path, symmetric: bool = True, photos: list[Path] | None = None) -> tuple[Path, float]:
    """The int8 QDQ model beside the cached matmul export (export.quantize defaults: training photos
    with General Mask holes; ``photos`` calibrates on others, keyed into the cached file's name).
    Returns the path and the seconds it took (0.0 on a cache hit)."""
    kind = "int8" if symmetric else "int8asym"
    if photos is not None:
        names = ",".join(sorted(str(Path(p).resolve()) for p in photos))
        kind += "-" + hashlib.sha256(names.encode()).hexdigest()[:8]
    digest = code_digest("export/quantize.py", "export/int8_graph.py")
    path = onnx_path.with_name(onnx_path.stem + f"-{kind}-{digest}.onnx")
    if path.is_file():
        return path, 0.0
    from export.quantize import quantize_onnx

    t = time.perf_counter()
    quantize_onnx(onnx_path, path, symmetric=symmetric, photos=photos)
    return path, time.perf_counter() - t


# ----------------------------------------------------------------------------- availability
def tensorrt_status() -> tuple[bool, str]:
    """(available, reason or version): a TensorRT module and a usable NVIDIA GPU."""
    try:
        from glama_deploy.engines.base import EngineError
        from glama_deploy.engines.tensorrt_ import import_tensorrt, load_cuda
    except ImportError as e:
        return False, f"glama_deploy.engines.tensorrt_ cannot be imported ({e})"
    try:
        trt, module = import_tensorrt()
        load_cuda(0).close()
    except EngineError as e:
        return False, str(e)
    except Exception as e:  # noqa: BLE001 - a broken driver or placeholder package
        return False, f"{type(e).__name__}: {e}"
    return True, f"{module} {trt.__version__}"


def prepare_tensorrt(onnx_path: Path, cache_dir: Path, sizes: list[tuple[int, int]], max_batch: int,
                     precision: str = "fp32") -> Path:
    """A TensorRT plan from the matmul-DFT ONNX whose profile covers ``sizes`` and ``max_batch``
    (cached; plans only load in the TensorRT version and GPU that built them)."""
    from export.tensorrt import build_engine as build_plan
    from export.tensorrt import make_profile

    hs, ws = [-(-h // 8) * 8 for h, _ in sizes], [-(-w // 8) * 8 for _, w in sizes]  # engines pad to /8
    lo = (1, min(hs), min(ws))
    hi = (max_batch, max(hs), max(ws))
    opt = (1, min(max(512, lo[1]), hi[1]), min(max(512, lo[2]), hi[2]))
    path = cache_dir / f"{onnx_path.stem}-{precision}-b{max_batch}-{hi[1]}x{hi[2]}.plan"
    if not path.is_file():
        build_plan(onnx_path, path, profile=make_profile(lo, opt, hi), precision=precision)
    return path


def triton_status(url: str | None) -> tuple[bool, str]:
    """(available, reason or how): a server URL, or a local Triton server environment to start
    one from (``python -m glama_deploy.triton setup-env``), plus benchmarks.triton_bench."""
    try:
        from benchmarks import triton_bench  # noqa: F401
    except ImportError as e:
        return False, f"benchmarks.triton_bench cannot be imported ({e})"
    if url:
        return True, f"server at {url}"
    try:
        from glama_deploy.triton.server import ServerEnv
    except ImportError as e:
        return False, f"no --triton-url and glama_deploy.triton cannot be imported ({e})"
    try:
        env = ServerEnv.find()
    except Exception as e:  # noqa: BLE001 - ServerError names the fix
        return False, f"no --triton-url and no local server environment: {e}"
    return True, f"local tritonserver started from {env.dir}"
