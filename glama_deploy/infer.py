"""Inpaint images: ``python -m glama_deploy.infer --image IMG_OR_DIR --mask MASK_OR_DIR --out OUT``.

Files or folders: with folders, image and mask pairs are matched by file stem (``a.jpg`` with
``a.png`` or ``a_mask.png``). Masks are single-channel images; nonzero pixels are holes.
The result keeps every known pixel of the input unchanged; images are padded to a multiple of
8 (symmetric) and cropped back. An all-zero mask returns the input unchanged. Grayscale inputs are
written as RGB, RGBA inputs keep their alpha, 16-bit inputs are written as 16-bit where the output
format allows. Outputs are written atomically and never overwrite an input unless --overwrite.

Exit codes: 0 ok, 2 bad input (one-line error naming the file or option), 1 other failure,
130 interrupted (Ctrl-C; finished outputs stay, no half-written file).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bundled import DEFAULT_WEIGHTS
from .engines import ENGINES, create_engine  # torch and onnxruntime are imported by the engine chosen
from .errors import EngineError, InputError, WeightsError
from .io import IMAGE_EXTS, check_file, list_images, read_image, read_mask, to_nchw, write_image
from .weights import resolve_weights  # light: torch is imported only to convert a download

MODES = ("full", "tiled", "two-stage")
MASK_SUFFIXES = ("", "_mask", "-mask", ".mask", "_mask001")
LOSSY = (".jpg", ".jpeg", ".webp")  # formats that change pixels when they encode

log = logging.getLogger("glama_deploy.infer")


@dataclass
class Job:
    image: Path
    mask: Path
    out: Path
    loaded: tuple | None = None  # (LoadedImage, mask) once read


def read_inputs(job: Job) -> tuple:
    """The decoded image and its mask (1,1,H,W), checked against each other."""
    loaded = read_image(job.image)
    return loaded, read_mask(job.mask, loaded.shape)[None, None]


def _find_mask(stem: str, mask_dir: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for ext in IMAGE_EXTS:
            p = mask_dir / f"{stem}{suffix}{ext}"
            if p.is_file():
                return p
    return None


def output_name(image: Path, suffix: str | None, fmt: str | None) -> str:
    """Folder mode: the input's name (plus ``suffix``), as PNG when the input is in a lossy format and
    no ``fmt`` is asked for, so every known pixel really comes back unchanged."""
    ext = f".{fmt.lower().lstrip('.')}" if fmt else (".png" if image.suffix.lower() in LOSSY else image.suffix)
    return f"{image.stem}{suffix or ''}{ext}"


def plan_jobs(image: Path, mask: Path, out: Path, suffix: str | None, overwrite: bool,
              fmt: str | None = None) -> list[Job]:
    """Pair images with masks and outputs; raise InputError on anything ambiguous."""
    if not image.exists():
        raise InputError(f"{image}: not found")
    if not mask.exists():
        raise InputError(f"{mask}: not found")
    if image.is_dir():
        if not mask.is_dir():
            raise InputError(f"{mask}: --image is a folder, so --mask must be a folder too")
        if out.exists() and not out.is_dir():
            raise InputError(f"{out}: --image is a folder, so --out must be a folder")
        mask_files = set(list_images(mask))
        jobs = []
        for img in list_images(image):
            if img in mask_files:
                continue  # masks kept beside images
            m = _find_mask(img.stem, mask)
            if m is None or m == img:
                raise InputError(f"{img}: no mask named {img.stem}[_mask].<ext> in {mask}")
            jobs.append(Job(img, m, out / output_name(img, suffix, fmt)))
        if not jobs:
            raise InputError(f"{image}: no images ({', '.join(IMAGE_EXTS)}) found")
    else:
        if mask.is_dir():
            raise InputError(f"{mask}: --image is a file, so --mask must be a file")
        target = out / output_name(image, None, fmt) if out.is_dir() else out
        jobs = [Job(image, mask, target)]
    for job in jobs:
        if not overwrite and job.out.resolve() in (job.image.resolve(), job.mask.resolve()):
            raise InputError(f"{job.out}: would overwrite an input (pass --overwrite to allow)")
        if job.out.suffix.lower() not in IMAGE_EXTS:
            raise InputError(f"{job.out}: unknown output format '{job.out.suffix}'")
    return jobs


def guess_engine(weights: Path) -> str:
    return {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt"}.get(weights.suffix, "torch")


def run_one(engine, job: Job, args: argparse.Namespace, refine_engine=None, progress: bool = False) -> dict:
    from .pipeline import run as run_pipeline

    loaded, mask = job.loaded or read_inputs(job)
    job.loaded = None
    h, w = loaded.shape
    t0 = time.perf_counter()
    image = loaded.to_nchw()
    loaded.pixels = None  # drop the decoded buffer: at 8K every copy counts
    hole = float(mask.mean())
    if hole == 0.0:
        result = image  # nothing to fill: the input comes back unchanged
    else:
        result = run_pipeline(engine, image, mask, mode=args.mode, tile=args.tile, overlap=args.overlap,
                              coarse_size=args.coarse_size, refine_engine=refine_engine, progress=progress,
                              margin=args.margin, batch_size=args.tile_batch,
                              full_max_pixels=args.full_max_pixels)
    seconds = time.perf_counter() - t0
    del image, mask
    write_image(job.out, result[0].transpose(1, 2, 0), loaded.alpha, loaded.bit_depth)
    return {"image": str(job.image), "mask": str(job.mask), "out": str(job.out), "width": w, "height": h,
            "hole_fraction": round(hole, 6), "seconds": round(seconds, 4)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m glama_deploy.infer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", required=True, type=Path, help="image file or folder of images")
    ap.add_argument("--mask", required=True, type=Path, help="mask file or folder (nonzero = hole)")
    ap.add_argument("--out", required=True, type=Path, help="output file, or folder for folder input")
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                    help="generator: .safetensors, official LaMa .ckpt, .onnx or TensorRT .plan, or a model "
                         "name (big-lama: downloaded once, python -m glama_deploy.weights list) "
                         f"(default: bundled {DEFAULT_WEIGHTS.name})")
    ap.add_argument("--offline", action="store_true",
                    help="never download a named model (also GLAMA_OFFLINE=1); a name must be in the cache")
    ap.add_argument("--engine", choices=ENGINES, help="default: from the weights' extension")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--threads", type=int, help="CPU threads for torch / onnxruntime")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="torch engine: bf16 autocast (FourierUnit and prefill stay fp32; fast on CPUs with "
                    "AVX512_BF16 / AMX and on GPUs; see benchmarks/README.md for its measured quality)")
    ap.add_argument("--mode", choices=MODES, default="full", help="whole image, mask-aware tiles, or "
                    "coarse + refine (two-stage)")
    ap.add_argument("--tile", type=int, default=512, help="tile size for tiled / two-stage refine")
    ap.add_argument("--overlap", type=int, default=64, help="tile overlap (feathered)")
    ap.add_argument("--tile-batch", type=int, default=1,
                    help="tiles per engine call: bounds memory; on a CPU batching buys little, on a GPU use 4-8")
    ap.add_argument("--margin", type=int, help="context around each hole region in tiled mode (default tile/8)")
    ap.add_argument("--full-max-pixels", type=int,
                    help="tiled / two-stage: largest engine input when tiles merge or, if tiles would cost more "
                         "than the frame, the whole frame runs at once (default 4096x4096; 0 = tiles only)")
    ap.add_argument("--coarse-size", type=int, default=256, help="two-stage: short side of the coarse pass")
    ap.add_argument("--refine-weights", help="two-stage: refine model, a file or a name (default: --weights)")
    ap.add_argument("--url", help="triton: server address (default localhost:8000 http, :8001 grpc)")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http", help="triton protocol")
    ap.add_argument("--model-name", default="glama_onnx", help="triton: model to call")
    ap.add_argument("--suffix", help="folder mode: add this to output names (e.g. _inpainted)")
    ap.add_argument("--format", dest="fmt", metavar="EXT",
                    help="output format when --out is a folder (png, jpg, webp, tif, bmp). Default: the "
                         "input's, except that JPEG/WebP inputs are written as PNG: a lossy format would "
                         "change the known pixels the result promises to keep")
    ap.add_argument("--overwrite", action="store_true", help="allow writing over an input file")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def make_engine(args: argparse.Namespace, weights: Path):
    kind = args.engine or guess_engine(weights)
    precision = getattr(args, "precision", "fp32")
    if precision != "fp32" and kind != "torch":
        raise InputError(f"--precision {precision}: only the torch engine runs bf16 (for int8 quantize the ONNX "
                         "export: python -m export.quantize, then --weights model-int8.onnx)")
    if kind == "triton":
        return create_engine("triton", url=args.url, protocol=args.protocol, model_name=args.model_name)
    if kind == "onnxruntime" and weights.suffix != ".onnx":
        raise InputError(f"{weights}: the onnxruntime engine needs an .onnx file (python -m export.onnx)")
    if kind == "torch" and weights.suffix in (".onnx", ".plan", ".engine"):
        raise InputError(f"{weights}: the torch engine needs .safetensors or .ckpt weights")
    if kind == "tensorrt":
        return create_engine("tensorrt", str(weights), device=args.device)
    if kind == "torch":
        return create_engine(kind, str(weights), device=args.device, threads=args.threads, precision=precision)
    return create_engine(kind, str(weights), device=args.device, threads=args.threads)


def check_weights_file(path: Path) -> None:
    """A first look at a weights file without importing torch (the full check comes with loading):
    the format its extension names must match its first bytes."""
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    with open(path, "rb") as f:
        head = f.read(16)
    ext = path.suffix.lower()
    if ext == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
        if not (2 <= n <= path.stat().st_size - 8 and head[8:9] == b"{"):
            raise WeightsError(f"{path}: not a safetensors file (no JSON header)")
    elif ext in (".ckpt", ".pt", ".pth") and not head.startswith((b"PK\x03\x04", b"\x80")):
        raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    elif not head:
        raise WeightsError(f"{path}: empty file")


def check_device(device: str) -> None:
    """Refuse a device the machine does not have, before building an engine (one line, exit 2)."""
    if not device.startswith("cuda"):
        if device != "cpu":
            raise InputError(f"--device {device}: unknown device (use cpu, cuda or cuda:N)")
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        build = version("torch")
    except PackageNotFoundError:
        build = ""
    if build.endswith("+cpu"):  # known without importing torch (seconds on a busy machine)
        raise InputError(f"--device {device}: this torch build has no CUDA (torch {build}); use --device cpu")
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
        raise InputError(f"--device {device}: {why} (torch {torch.__version__}); use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise InputError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if argv is None and threading.current_thread() is threading.main_thread():
        # a run started in the background of a script inherits SIGINT ignored: Ctrl-C / kill -INT
        # must still stop it between images (exit 130, nothing half-written)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    jobs: list[Job] = []
    results: list[dict] = []
    try:
        if args.fmt and f".{args.fmt.lower().lstrip('.')}" not in IMAGE_EXTS:
            raise InputError(f"--format {args.fmt}: unknown format (use one of {', '.join(IMAGE_EXTS)})")
        jobs = plan_jobs(args.image, args.mask, args.out, args.suffix, args.overwrite, args.fmt)
        for job in jobs:  # before any model is loaded: a bad input costs a fraction of a second
            check_file(job.image, "image")
            check_file(job.mask, "mask")
        if len(jobs) == 1:  # decode it now too (run_one reuses it): a size mismatch is found at once
            jobs[0].loaded = read_inputs(jobs[0])
        args.weights, args.refine_weights = (  # a model name -> its cached file, fetched on first use
            None if w is None else Path(w) if args.engine == "triton"
            else resolve_weights(w, offline=args.offline or None, progress=not args.quiet)
            for w in (args.weights, args.refine_weights))
        if args.engine != "triton":
            check_weights_file(args.weights)
        if (args.engine or guess_engine(args.weights)) in ("torch", "tensorrt"):
            check_device(args.device)
        for job in jobs:
            if job.out.suffix.lower() in LOSSY and not args.quiet:
                print(f"note: {job.out.name} is {job.out.suffix[1:].upper()}, a lossy format: known pixels "
                      "will differ slightly from the input (write .png to keep them exact)", file=sys.stderr)
                break
        engine = make_engine(args, args.weights)
        refine = make_engine(args, args.refine_weights) if args.refine_weights else None
        from tqdm import tqdm

        bar = tqdm(jobs, unit="img", disable=args.quiet or len(jobs) < 2, file=sys.stderr)
        for job in bar:
            bar.set_postfix_str(job.image.name)
            results.append(run_one(engine, job, args, refine, progress=not args.quiet and len(jobs) == 1))
    except KeyboardInterrupt:  # outputs are written atomically: nothing half-written is left
        print(f"interrupted after {len(results)} of {len(jobs)} image(s)", file=sys.stderr)
        return 130
    except (InputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except EngineError as e:
        print(f"error: engine: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, permission denied...: the output was not replaced
        print(f"error: {e.filename or ''} {e.strerror or e}".replace("  ", " "), file=sys.stderr)
        return 1
    summary = {"engine": engine.describe(), "mode": args.mode, "count": len(results),
               "seconds": round(sum(r["seconds"] for r in results), 4), "results": results}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for r in results:
            print(f"{r['out']}  ({r['width']}x{r['height']}, hole {100 * r['hole_fraction']:.1f}%, "
                  f"{r['seconds']:.2f} s)", file=sys.stderr)
    return 0


def inpaint_arrays(engine, image: np.ndarray, mask: np.ndarray, **pipeline_opts) -> np.ndarray:
    """Library entry point: HxWx3 float image + HxW mask -> HxWx3 result."""
    from .pipeline import run as run_pipeline

    img, m = to_nchw(image, mask)
    return run_pipeline(engine, img, m, **pipeline_opts)[0].transpose(1, 2, 0)


if __name__ == "__main__":
    sys.exit(main())
