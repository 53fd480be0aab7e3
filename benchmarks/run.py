"""Benchmark every engine available here and write a report that says which engine and mode to pick.

    python benchmarks/run.py [--engines torch-fft,ort-matmul,...] [--sizes 256,512,1024,2048]
                             [--config lama-fourier] [--out reports/] [--quick]

What is measured (one run, one machine):
  latency   p50/p90/p99 per engine, size and batch. Each engine runs in its own process and the
            engines are timed *interleaved*: each round calls every engine once on the same input,
            in a rotated order, one at a time, so load from other processes and clock drift hit all
            engines alike; ratios are medians of per-round ratios.
  memory    peak RSS (VmHWM) of each engine's own process during its first call on a case
            (fresh processes per case by default, so cases cannot inherit each other's heap);
            GPU peak with CUDA.
  FLOPs     counted by torch.utils.flop_counter on the model (conv + matmul), vs this machine's
            sgemm peak measured in the same run.
  high-res  full-frame vs tiled vs two-stage on 2560x1600 and 7680x4320 (benchmarks.highres).
  Triton    when --triton-url (or GLAMA_TRITON_URL) names a server (benchmarks.triton_bench).

Writes OUT/benchmark.json, OUT/benchmark.md, OUT/latency.png, OUT/highres.png.

Modules: benchmarks.cases (one case, interleaved timing; exports; high-res/Triton rows), benchmarks.report
(rows, ratios, summary, Markdown), benchmarks.plots (figures), benchmarks.engines, benchmarks.worker.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.cases import (  # noqa: E402
    export_all,
    highres_rows,
    parse_list,
    parse_size,
    run_case,
    size_label,
    triton_rows,
)
from benchmarks.engines import (  # noqa: E402
    ALL_ENGINES,
    DEFAULT_ENGINES,
    DESCRIPTIONS,
    LOCAL_ENGINES,
    prepare_int8,
    prepare_onnx,
    prepare_tensorrt,
    prepare_weights,
    tensorrt_status,
    triton_status,
)
from benchmarks.plots import plot  # noqa: E402
from benchmarks.report import build_rows, method, summarize, to_markdown, write_text  # noqa: E402
from benchmarks.worker import start_workers  # noqa: E402
from glama_deploy.bundled import SAMPLES  # noqa: E402
from glama_deploy.weights import resolve_weights  # noqa: E402

log = logging.getLogger("benchmarks")
SCHEMA = "glama-deploy/benchmark/v1"
HIGHRES_DEFAULT = "2560x1600,7680x4320"
QUICK = {"config": "tiny", "threads": 1, "warmup": 1, "sizes": "128,256", "batches": "1,2", "min_iters": 3,
         "max_iters": 20, "budget_s": 1.5, "triton_n": 4, "highres_sizes": "640x400", "sgemm_n": 1024,
         "isolation": "engine"}


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                    help=f"comma list from {', '.join(ALL_ENGINES)} (default: all but ort-int8-asym; "
                         "unavailable ones are listed with the reason)")
    ap.add_argument("--sizes", default="256,512,1024,2048", help="square sides or WxH, comma separated")
    ap.add_argument("--batches", default="1,2", help="batch sizes (default 1,2)")
    ap.add_argument("--large-batch-max-side", type=int, default=0,
                    help="run batches > 1 only up to this image side (0 = every size)")
    ap.add_argument("--config", default="lama-fourier",
                    help="generator config for seeded random weights (tiny, small, lama-fourier, big-lama); "
                         "ignored with --weights")
    ap.add_argument("--weights", help="weights file (.safetensors) or a model name (big-lama); "
                    "default: seeded random weights")
    ap.add_argument("--out", default="reports", help="output folder (default reports/)")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "glama-deploy" / "benchmarks"),
                    help="where weights and ONNX exports are cached between runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per engine")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--warmup", type=int, default=2,
                    help="untimed calls per engine and case (the first one also measures memory)")
    ap.add_argument("--min-iters", type=int, default=5, help="timed calls per engine and case, at least")
    ap.add_argument("--max-iters", type=int, default=50, help="timed calls per engine and case, at most")
    ap.add_argument("--budget-s", type=float, default=30.0,
                    help="keep timing rounds until this many seconds passed (after --min-iters)")
    ap.add_argument("--max-case-s", type=float, default=0.0,
                    help="stop a case after 2 rounds once its timed rounds took this long (0 = off); "
                         "lets big sizes run fewer iterations")
    ap.add_argument("--isolation", choices=("case", "engine"), default="case",
                    help="case: fresh engine processes for every size/batch, so memory peaks cannot carry "
                         "over (default); engine: one process per engine for all cases (faster start-up)")
    ap.add_argument("--highres-image", default=None,
                    help="photo for the high-res rows (default: a bundled sample, resized)")
    ap.add_argument("--highres-sizes", default=HIGHRES_DEFAULT, help="WxH list; '' to skip")
    ap.add_argument("--highres-engine", default="ort-matmul", help="engine for the high-res rows")
    ap.add_argument("--triton-url", default=os.environ.get("GLAMA_TRITON_URL"),
                    help="Triton server URL (default $GLAMA_TRITON_URL)")
    ap.add_argument("--triton-concurrency", type=int, default=2, help="concurrent Triton clients")
    ap.add_argument("--triton-sizes", default="", help="sizes for the Triton rows (default: the smallest size)")
    ap.add_argument("--triton-n", type=int, default=8, help="requests per Triton size (and as many in-process)")
    ap.add_argument("--sgemm-n", type=int, default=2048, help="matrix side for the sgemm peak")
    ap.add_argument("--calib-photos", nargs="+", metavar="DIR",
                    help="int8 rows: calibration photo folders (default: the training photos export.quantize "
                    "uses; calibration changes the int8 model's quality, not its speed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="small model and sizes, few iterations: the whole report in ~1-2 min")
    ap.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    return ap


def apply_quick(args, argv: list[str]) -> None:
    """--quick replaces the defaults of every option not given explicitly."""
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for k, v in QUICK.items():
        if k not in given:
            setattr(args, k, v)


def default_highres_image() -> str | None:
    for folder in (SAMPLES, common.SHARED_HIGHRES):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                           and "mask" not in p.stem)
            if files:
                return str(files[0])
    return None


def add_int8(name: str, fp32: str | None, infos: dict, specs: dict, prep: dict,
             calib_dirs: list[str] | None = None) -> None:
    """The ort-int8(-asym) spec: export.quantize on the matmul export ``fp32`` (cached beside it),
    calibrated on the training photos or on the images in ``calib_dirs``."""
    if fp32 is None:
        infos[name].update(available=False, reason="no matmul export to quantize")
        return
    log.info("%s: quantization of %s", name, Path(fp32).name)
    try:
        photos = None
        if calib_dirs:
            from training.data import find_images

            photos = find_images(calib_dirs)
        path, secs = prepare_int8(Path(fp32), symmetric=name == "ort-int8", photos=photos)
    except Exception as e:  # noqa: BLE001 - the rest of the report stands without it
        infos[name].update(available=False, reason=f"quantization failed: {type(e).__name__}: {e}")
        return
    prep[f"quantize_{name}_s"] = secs
    specs[name] = {"name": name, "kind": "onnxruntime", "onnx": str(path)}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.quick:
        apply_quick(args, argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    try:
        sizes = [parse_size(s) for s in parse_list(args.sizes)]
        batches = parse_list(args.batches, int)
        hr_sizes = [parse_size(s) for s in parse_list(args.highres_sizes)]
        wanted = parse_list(args.engines)
        bad = [e for e in wanted if e not in ALL_ENGINES]
        if bad:
            raise ValueError(f"unknown engine(s) {bad}; choose from {list(ALL_ENGINES)}")
        if not sizes or not batches or min(batches) < 1:
            raise ValueError("need at least one size and batch sizes >= 1")
        if args.threads < 1 or args.min_iters < 1 or args.max_iters < args.min_iters:
            raise ValueError("need --threads >= 1 and 1 <= --min-iters <= --max-iters")
        if args.highres_image and not Path(args.highres_image).is_file():
            raise ValueError(f"{args.highres_image}: high-res image not found")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)

    # every process started from here on (engine workers, high-res cases, sgemm) uses --threads
    for var in common.THREAD_VARS:
        os.environ[var] = str(args.threads)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    report = {"schema": SCHEMA, "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "quick": bool(args.quick), "config": args.config, "threads": args.threads, "device": args.device,
              "args": vars(args), "machine": common.machine_info(), "versions": common.versions(),
              "git_revision": common.git_revision()}

    # -- engines and the files they need (exports cached in --cache-dir)
    try:
        named = str(resolve_weights(args.weights)) if args.weights else None  # big-lama -> its cached file
        weights, model_id = prepare_weights(args.config, named, cache, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["weights"] = str(weights)
    infos = {name: {"name": name, "description": DESCRIPTIONS[name], "available": True, "reason": ""}
             for name in wanted}
    specs: dict[str, dict] = {}
    jobs = {}
    for name in wanted:
        if name == "torch-bf16":
            specs[name] = {"name": name, "kind": "torch", "weights": str(weights), "spectral_backend": "fft",
                           "precision": "bf16"}
        elif name.startswith("torch"):
            specs[name] = {"name": name, "kind": "torch", "weights": str(weights),
                           "spectral_backend": name.split("-")[1]}
        elif name.startswith("ort-int8"):  # quantized from the matmul export (below)
            if "ort-matmul" not in wanted and not any(j.startswith("ort-int8") for j in jobs):
                jobs[name] = (weights, model_id, "matmul", cache)
        elif name.startswith("ort"):
            jobs[name] = (weights, model_id, "matmul" if name == "ort-matmul" else "fft", cache)
        elif name == "tensorrt":
            ok, why = tensorrt_status()
            infos[name].update(available=ok, reason="" if ok else why, version=why if ok else None)
        elif name == "triton":
            ok, why = triton_status(args.triton_url)
            infos[name].update(available=ok, reason="" if ok else why, how=why if ok else None)
    if jobs:
        log.info("ONNX exports for %s (cached in %s)", ", ".join(jobs), cache)
    prep = {}
    for name, res in export_all(jobs, parallel=True).items():
        if isinstance(res, Exception):
            log.warning("%s unavailable: export failed: %s", name, res)
            infos[name].update(available=False, reason=f"export failed: {type(res).__name__}: {res}")
            continue
        path, secs = res
        prep[f"export_{name}_s"] = secs
        specs[name] = {"name": name, "kind": "onnxruntime", "onnx": str(path)}
    fp32 = (specs.get("ort-matmul") or {}).get("onnx")
    for name in ("ort-int8", "ort-int8-asym"):
        fp32 = fp32 or (specs.pop(name, None) or {}).get("onnx")
    for name in ("ort-int8", "ort-int8-asym"):
        if name in wanted:
            add_int8(name, fp32, infos, specs, prep, args.calib_photos)
    if infos.get("tensorrt", {}).get("available"):
        try:
            onnx_mm = specs.get("ort-matmul", {}).get("onnx") or prepare_onnx(weights, model_id, "matmul", cache)[0]
            specs["tensorrt"] = {"name": "tensorrt", "kind": "tensorrt",
                                 "plan": str(prepare_tensorrt(Path(onnx_mm), cache, sizes, max(batches)))}
        except Exception as e:  # noqa: BLE001
            infos["tensorrt"].update(available=False, reason=f"plan build failed: {type(e).__name__}: {e}")
    specs = {n: specs[n] for n in LOCAL_ENGINES + ("tensorrt",) if n in specs}
    report["prepare"] = prep

    # -- hardware peak (measured again at the end; the higher one is the peak)
    log.info("sgemm peak with %d thread(s)", args.threads)
    sg1 = common.sgemm_peak(args.sgemm_n, threads=args.threads)

    # -- FLOPs, counted on the meta device
    from glama_deploy.model.weights import load_generator

    generator = load_generator(weights)[0]
    config_obj = generator.config
    report["config"] = config_obj.name  # with --weights, the file decides
    report["model"] = {"parameters": sum(p.numel() for p in generator.parameters()),
                       "weights_mb": Path(weights).stat().st_size / 1e6,
                       "onnx_mb": {n: Path(sp["onnx"]).stat().st_size / 1e6 for n, sp in specs.items() if "onnx" in sp}}
    del generator
    all_hw = sorted(set(sizes), key=lambda s: s[0] * s[1])
    flops = {hw: {b: common.count_flops(config_obj, hw[0], hw[1], b) for b in ("fft", "matmul")}
             for hw in all_hw}

    # -- latency + memory, one process per engine, interleaved
    groups = [(hw, b) for hw in all_hw for b in batches
              if b == 1 or not args.large_batch_max_side or max(hw) <= args.large_batch_max_side]
    timings: dict = {}
    load_s: dict[str, list[float]] = {}
    workers: dict = {}

    def ensure_workers() -> None:
        nonlocal workers
        if workers:
            return
        alive = {n: s for n, s in specs.items() if infos[n]["available"]}
        workers, failed = start_workers(alive, args.threads, args.device)
        for n, err in failed.items():
            log.warning("%s unavailable: %s", n, err)
            infos[n].update(available=False, reason=err)
        for n, w in workers.items():
            load_s.setdefault(n, []).append(w.info["load_s"])

    def stop_workers() -> None:
        nonlocal workers
        for w in workers.values():
            w.close()
        workers = {}

    try:
        for hw, b in tqdm(groups, desc="cases", unit="case", file=sys.stderr):
            ensure_workers()
            res = run_case(workers, hw, b, seed=args.seed, warmup=args.warmup, min_iters=args.min_iters,
                           max_iters=args.max_iters, budget_s=args.budget_s, max_case_s=args.max_case_s)
            if args.isolation == "case":
                for n in res:
                    res[n]["load_s"] = load_s[n][-1]
                stop_workers()
            timings[(hw, b)] = res
            log.info("%s b%d: %s", size_label(hw), b, ", ".join(
                f"{n} {1e3 * np.median(t['samples']):.0f} ms" for n, t in res.items() if t["samples"]))
    finally:
        stop_workers()
    report["load_s"] = {n: float(np.median(v)) for n, v in load_s.items()}
    report["engines"] = list(infos.values())

    sg2 = common.sgemm_peak(args.sgemm_n, threads=args.threads)
    sgemm = max(sg1, sg2, key=lambda s: s["peak_gflops"])
    sgemm["runs_gflops"] = [sg1["peak_gflops"], sg2["peak_gflops"]]
    report["sgemm"] = sgemm
    report["rows"], report["ratios"] = build_rows(timings, flops, sgemm["peak_gflops"])
    report["flops"] = {size_label(hw): f for hw, f in flops.items()}

    # -- high-res and Triton
    hr_spec = specs.get(args.highres_engine) or next(iter(specs.values()), None)
    image_path = args.highres_image or default_highres_image()
    if not hr_sizes:
        report["highres"] = {"available": False, "reason": "skipped (--highres-sizes '')", "rows": []}
    elif hr_spec is None or image_path is None:
        report["highres"] = {"available": False, "reason": "no engine or no photo for the high-res rows",
                             "rows": []}
    else:
        log.info("high-res rows with %s on %s", hr_spec["name"], image_path)
        report["highres"] = highres_rows(hr_spec, image_path, hr_sizes, args.threads)
    if infos.get("triton", {}).get("available"):
        tsizes = [parse_size(s) for s in parse_list(args.triton_sizes)] if args.triton_sizes else all_hw[:1]
        log.info("Triton (%s) at %s", infos["triton"]["how"], ", ".join(size_label(s) for s in tsizes))
        report["triton"] = triton_rows(args.triton_url, specs.get("ort-matmul", {}).get("onnx"), tsizes,
                                       n=args.triton_n, concurrency=args.triton_concurrency, threads=args.threads)
    else:
        report["triton"] = {"available": False, "rows": [],
                            "reason": infos["triton"]["reason"] if "triton" in infos else "not requested"}

    report["method"] = method(args)
    report["load_average_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - wall0
    report["summary"] = summarize(report)

    write_text(out / "benchmark.json", json.dumps(report, indent=2, default=str))
    write_text(out / "benchmark.md", to_markdown(report))
    pngs = plot(report, out)
    log.info("wrote %s, %s, %s in %.0f s", out / "benchmark.json", out / "benchmark.md", ", ".join(pngs),
             time.perf_counter() - wall0)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
