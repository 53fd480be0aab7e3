"""High-resolution inference: full-frame vs tiled vs two-stage, time and peak memory per mode.

``python -m benchmarks.highres [--weights W] [--engine onnxruntime] [--images A.jpg B.jpg] [--json out.json]``

Each case (image x size x mode) runs in a fresh subprocess, so its peak resident memory (the
kernel's high-water mark of that process: engine, input image, mask, output and every temporary)
is not polluted by other cases. Two hole patterns (``--holes``): one irregular blob covering
``--hole`` of the image (an object to remove), and small ellipses scattered over the whole frame
covering ``--scattered`` (16.6%), where tiles would cover more than the frame and the tiler's cost
model must pick one full-frame pass (the ``tiles`` column says which plan ran). Default run:
every mode at each photo's own size, then tiled and two-stage at 7680x4320 (the photo upscaled);
full-frame at 8K only with ``--full-8k`` (it needs many GiB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import SHARED_HIGHRES  # noqa: E402
from glama_deploy.bundled import DEFAULT_WEIGHTS  # noqa: E402

MODES = ("full", "tiled", "two-stage")


@dataclass(frozen=True)
class EngineFactory:
    """A picklable engine recipe (what a case subprocess rebuilds): ``create_engine(kind, weights)``."""

    kind: str
    weights: str
    threads: int | None = None
    device: str = "cpu"

    def __call__(self):
        from glama_deploy.engines import create_engine

        return create_engine(self.kind, self.weights, device=self.device, threads=self.threads)


def make_hole(h: int, w: int, fraction: float = 0.05, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 mask, 1 = hole: one irregular blob of about ``fraction`` of the area."""
    import cv2

    rng = np.random.default_rng(seed)
    theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    radius = 1 + sum(0.12 * rng.random() * np.cos(k * theta + 2 * np.pi * rng.random()) for k in (2, 3, 5))
    px, py = 1.3 * radius * np.cos(theta), radius * np.sin(theta)
    unit_area = 0.5 * abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1)))
    scale = np.sqrt(fraction * h * w / unit_area)
    cy, cx = h * (0.4 + 0.2 * rng.random()), w * (0.4 + 0.2 * rng.random())
    pts = np.stack([cx + scale * px, cy + scale * py], axis=1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def make_scattered(h: int, w: int, fraction: float = 0.166, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 mask, 1 = hole: many small ellipses spread over the whole frame (scratches,
    dust, a watermark pattern) until about ``fraction`` of the area is hole."""
    import cv2

    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    side = min(h, w)
    while mask.mean() < fraction:
        for _ in range(16):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(side * rng.uniform(0.01, 0.04)), int(side * rng.uniform(0.01, 0.04)))
            cv2.ellipse(mask, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask


HOLES = {"blob": make_hole, "scattered": make_scattered}


def load_scaled(path: str | os.PathLike, size: tuple[int, int] | None) -> np.ndarray:
    """Photo as (1,3,H,W) float32 in [0,1], resized to ``size`` = (H, W) if given, built channel
    by channel (no HxWx3 float temporary)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    if size is not None and bgr.shape[:2] != tuple(size):
        up = size[0] * size[1] > bgr.shape[0] * bgr.shape[1]
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_CUBIC if up else cv2.INTER_AREA)
    h, w = bgr.shape[:2]
    img = np.empty((1, 3, h, w), np.float32)
    for c in range(3):
        np.multiply(bgr[:, :, 2 - c], np.float32(1 / 255), out=img[0, c], casting="unsafe")
    return img


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _case(
    conn, factory, image_path: str, size, fraction: float, mode: str, opts: dict, repeats: int, hole: str = "blob"
) -> None:
    """One measurement in its own process; sends a dict through ``conn``."""
    try:
        from glama_deploy.pipeline import run
        from glama_deploy.pipeline.cost import FULL_MAX_PIXELS
        from glama_deploy.pipeline.tiling import plan_tiles

        engine = factory()
        warm = np.full((1, 3, 64, 64), 0.5, np.float32)
        warm_mask = np.zeros((1, 1, 64, 64), np.float32)
        warm_mask[..., 16:48, 16:48] = 1
        engine(warm, warm_mask)
        image = load_scaled(image_path, size)
        h, w = image.shape[2:]
        mask = HOLES[hole](h, w, fraction).astype(np.float32)[None, None]
        info = {}
        if mode != "full":
            info = plan_tiles(
                mask[0, 0] > 0.5,
                opts["tile"],
                opts["overlap"],
                coarse_size=opts["coarse_size"],
                full_max_pixels=opts.get("full_max_pixels", FULL_MAX_PIXELS),
            ).info
        baseline = _rss_mib()
        resettable = _reset_peak()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run(engine, image, mask, mode, **opts)
            times.append(time.perf_counter() - t0)
            run_peak = _hwm_mib() if resettable else None
            peak_all = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            for y in range(0, h, 256):  # known pixels unchanged (checked in strips: no big temporaries)
                keep = mask[0, 0, y : y + 256] < 0.5
                if not all(
                    np.array_equal(out[0, c, y : y + 256][keep], image[0, c, y : y + 256][keep])
                    for c in range(3)
                ):
                    raise AssertionError("known pixels changed")
            del out
        conn.send(
            {
                "ok": True,
                "size": f"{w}x{h}",
                "width": w,
                "height": h,
                "hole_fraction": round(float(mask.mean()), 4),
                "seconds": round(min(times), 3),
                "peak_rss_mib": round(peak_all, 1),
                "peak_rss_mb": round(peak_all * 2**20 / 1e6, 1),
                "run_peak_rss_mib": round(run_peak, 1) if run_peak else None,
                "baseline_rss_mib": round(baseline, 1),
                **{f"plan_{k}": v for k, v in info.items()},
            }
        )
    except BaseException as e:  # reported, not raised: the parent prints the table
        conn.send({"ok": False, "error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def _parse_size(size) -> tuple[int, int] | None:
    """None / "native" -> None; "WxH" (as image viewers write it) or an (H, W) pair -> (H, W)."""
    if size is None or size == "native":
        return None
    if isinstance(size, str):
        w, h = (int(v) for v in size.lower().split("x"))
        return h, w
    return int(size[0]), int(size[1])


def measure_highres(
    engine_factory,
    image_path: str | os.PathLike,
    sizes,
    hole_fraction: float = 0.05,
    modes=MODES,
    *,
    tile: int = 512,
    overlap: int = 64,
    coarse_size: int = 256,
    batch_size: int = 1,
    repeats: int = 1,
    timeout: float = 1800.0,
    max_full_pixels: int | None = 16_000_000,
    hole: str = "blob",
    full_max_pixels: int | None = None,
) -> list[dict]:
    """Time and peak memory of each mode on one photo at each size, one fresh subprocess per case.

    ``engine_factory``: a picklable callable returning an Engine (e.g. :class:`EngineFactory`,
    a module-level function or a ``functools.partial``). ``sizes``: (H, W) pairs, "WxH" strings,
    or None / "native" for the photo's own size. Full-frame is skipped above ``max_full_pixels``
    (its activations take many GiB at 8K; None = always run). Returns one dict per case with
    ``seconds`` (best of ``repeats``), ``peak_rss_mib`` (whole process), ``run_peak_rss_mib``
    (peak while inpainting, if the kernel lets us reset the mark), ``baseline_rss_mib`` (engine +
    image + mask loaded) and, per size, ``speedup_vs_full`` when full-frame was measured too.
    A failed case (e.g. out of memory) has ``ok: False`` and ``error``. ``hole``: "blob" (one
    compact hole) or "scattered" (small holes all over the frame). ``full_max_pixels``: the
    pipeline's memory bound for its cost model (None: its default; 0: tiles only).
    """
    ctx = mp.get_context("spawn")
    opts = {"tile": tile, "overlap": overlap, "coarse_size": coarse_size, "batch_size": batch_size}
    if full_max_pixels is not None:
        opts["full_max_pixels"] = full_max_pixels
    rows = []
    for size in sizes:
        size_t = _parse_size(size)
        group = []
        for mode in modes:
            if mode == "full" and max_full_pixels and size_t and size_t[0] * size_t[1] > max_full_pixels:
                group.append(
                    {
                        "image": Path(image_path).name,
                        "hole": hole,
                        "mode": mode,
                        "size": f"{size_t[1]}x{size_t[0]}",
                        "ok": False,
                        "error": f"skipped: above max_full_pixels={max_full_pixels}",
                    }
                )
                continue
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_case,
                args=(child, engine_factory, str(image_path), size_t, hole_fraction, mode, opts, repeats, hole),
            )
            proc.start()
            child.close()
            result = None
            if parent.poll(timeout):
                try:
                    result = parent.recv()
                except EOFError:
                    pass
            else:
                result = {"ok": False, "error": f"timed out after {timeout:.0f} s"}
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            if result is None:
                why = " (killed: likely out of memory)" if proc.exitcode == -9 else ""
                result = {"ok": False, "error": f"case process died with exit code {proc.exitcode}{why}"}
            label = f"{size_t[1]}x{size_t[0]}" if size_t else "native"
            group.append({"image": Path(image_path).name, "hole": hole, "mode": mode, "size": label, **result})
        full = next((r for r in group if r["mode"] == "full" and r["ok"]), None)
        for r in group:
            if full is not None and r["ok"]:
                r["speedup_vs_full"] = round(full["seconds"] / r["seconds"], 2)
        rows.extend(group)
    return rows


def onnx_for(weights: Path, cache: Path | None = None) -> Path:
    """An ONNX export of ``weights`` (.safetensors/.ckpt), cached by content hash."""
    from export.onnx import export_onnx
    from glama_deploy.model.weights import load_generator

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "glama-deploy"
    out = cache / f"{weights.stem}-{digest}.onnx"
    if not out.is_file():
        model, _ = load_generator(weights)
        export_onnx(model, out, parity_sizes=((64, 64),))
    return out


def format_table(rows: list[dict]) -> str:
    head = "| image | size | mode | hole | seconds | speedup | peak RSS MiB | run peak MiB | tiles |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        size = r["size"]
        if not r.get("ok"):
            lines.append(f"| {r['image']} | {size} | {r['mode']} | | failed: {r['error']} | | | | |")
            continue
        tiles = "full frame" if r.get("plan_full_frame") else r.get("plan_tiles", "")
        lines.append(
            f"| {r['image']} | {size} | {r['mode']} | {r.get('hole', 'blob')} {100 * r['hole_fraction']:.1f}% | "
            f"{r['seconds']:.2f} | "
            f"{r.get('speedup_vs_full', '')} | {r['peak_rss_mib']:.0f} | {r['run_peak_rss_mib'] or ''} | "
            f"{tiles} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--weights",
        type=Path,
        default=DEFAULT_WEIGHTS,
        help=".onnx, or .safetensors (exported to ONNX once and cached for onnxruntime)",
    )
    ap.add_argument("--engine", choices=("onnxruntime", "torch"), default="onnxruntime")
    ap.add_argument("--images", nargs="+", type=Path,
                    help="photos (default: ../shared/data/highres/*.jpg, beside the repository)")
    ap.add_argument("--big-size", default="7680x4320", help="large size for tiled / two-stage ('' to skip)")
    ap.add_argument("--full-8k", action="store_true", help="also run full-frame at --big-size (many GiB)")
    ap.add_argument("--hole", type=float, default=0.05, help="hole fraction of the blob hole")
    ap.add_argument("--holes", nargs="+", choices=tuple(HOLES), default=list(HOLES),
                    help="hole patterns: one compact blob, and/or small holes scattered over the frame")
    ap.add_argument("--scattered", type=float, default=0.166, help="hole fraction of the scattered holes")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--full-max-pixels", type=int, default=None,
                    help="the pipeline's memory bound for merged tiles / one full-frame pass (0 = tiles only)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    images = args.images or sorted(SHARED_HIGHRES.glob("*.jpg"))
    if not images:
        print("error: no images (pass --images)", file=sys.stderr)
        return 2
    weights = args.weights
    if args.engine == "onnxruntime" and weights.suffix != ".onnx":
        weights = onnx_for(weights)
    factory = EngineFactory(args.engine, str(weights), threads=args.threads)
    common = dict(tile=args.tile, overlap=args.overlap, repeats=args.repeats, full_max_pixels=args.full_max_pixels)
    fractions = {"blob": args.hole, "scattered": args.scattered}
    rows = []
    for hole in args.holes:
        for img in images:
            rows += measure_highres(factory, img, [None], fractions[hole], args.modes, hole=hole, **common)
    if args.big_size:
        modes = [m for m in args.modes if args.full_8k or m != "full"]
        rows += measure_highres(
            factory, images[0], [args.big_size], args.hole, modes, max_full_pixels=None, **common
        )
    print(
        f"engine {args.engine} ({weights.name}), {args.threads} threads, tile {args.tile}, "
        f"overlap {args.overlap}, best of {args.repeats}"
    )
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
