"""One benchmark case on every engine (interleaved timing), the ONNX exports, high-res and Triton rows."""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from benchmarks.engines import build_engine, prepare_onnx
from benchmarks.worker import WorkerDied

log = logging.getLogger("benchmarks")
REFERENCE_ENGINE = "torch-fft"


# ----------------------------------------------------------------------------- parsing
def parse_size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '2560x1600' -> (1600, 2560) as (H, W) (WxH, like image viewers)."""
    try:
        if "x" in text:
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            h = w = int(text)
    except ValueError:
        raise ValueError(f"bad size {text!r}: use N or WxH") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"bad size {text!r}: must be positive")
    return h, w


def parse_list(text: str, kind=str) -> list:
    return [kind(v.strip()) for v in text.split(",") if v.strip()]


def size_label(hw) -> str:
    h, w = hw
    return str(h) if h == w else f"{w}x{h}"


# ----------------------------------------------------------------------------- timing + memory
def run_case(workers: dict, hw: tuple[int, int], batch: int, *, seed: int, warmup: int, min_iters: int,
             max_iters: int, budget_s: float, max_case_s: float = 0.0) -> dict:
    """One size/batch on every engine: prepare (first call = memory measurement, then warm-up),
    then rounds of one timed call per engine in a rotated order until ``min_iters`` rounds and
    ``budget_s`` seconds (or ``max_iters`` rounds; or, with ``max_case_s``, at least 2 rounds and
    that many seconds: big sizes get fewer samples). Only one engine runs at any time.

    Returns {name: {"samples": [s, ...], "memory": {...}, "max_abs_diff_vs_torch_fft": x}} or
    {name: {"samples": [], "error": "..."}}.
    """
    out: dict[str, dict] = {}
    outputs = {}
    for name, w in workers.items():
        try:
            res = w.request(("case", hw[0], hw[1], batch, seed, warmup))
        except WorkerDied as e:
            res = {"error": str(e)}
        if "error" in res:
            log.warning("%s failed at %s batch %d: %s", name, size_label(hw), batch, res["error"])
            out[name] = {"samples": [], "error": res["error"]}
            continue
        outputs[name] = res.pop("output")
        out[name] = {"samples": [], "memory": res}
    ref = outputs.get(REFERENCE_ENGINE)
    for name, y in outputs.items():
        if ref is not None:
            out[name]["max_abs_diff_vs_torch_fft"] = float(np.abs(y - ref).max())
    del outputs, ref
    live = [n for n in workers if "error" not in out[n]]
    t0 = time.perf_counter()
    rounds = 0
    while live:
        k = rounds % len(live)
        for name in live[k:] + live[:k]:
            try:
                res = workers[name].request(("time",))
            except WorkerDied as e:
                res = {"error": str(e)}
            if "error" in res:
                out[name]["error"] = res["error"]
            else:
                out[name]["samples"].append(res["s"])
        live = [n for n in live if "error" not in out[n]]
        rounds += 1
        elapsed = time.perf_counter() - t0
        if (rounds >= max_iters or (rounds >= min_iters and elapsed >= budget_s)
                or (max_case_s and rounds >= 2 and elapsed >= max_case_s)):
            break
    return out


def export_all(jobs: dict[str, tuple], parallel: bool) -> dict[str, tuple[Path, float] | Exception]:
    """Run prepare_onnx for each engine, in parallel processes when asked (exports are mostly
    single-threaded Python, so two of them use two cores)."""
    results: dict = {}
    if not parallel or len(jobs) < 2:
        for name, job in jobs.items():
            try:
                results[name] = prepare_onnx(*job)
            except Exception as e:  # noqa: BLE001
                results[name] = e
        return results
    import concurrent.futures as cf

    with cf.ProcessPoolExecutor(max_workers=len(jobs), mp_context=mp.get_context("spawn")) as pool:
        futs = {name: pool.submit(prepare_onnx, *job) for name, job in jobs.items()}
        for name, fut in futs.items():
            try:
                results[name] = fut.result()
            except Exception as e:  # noqa: BLE001
                results[name] = e
    return results


# ----------------------------------------------------------------------------- high-res, Triton
def highres_rows(spec: dict, image_path: str, sizes: list[tuple[int, int]], threads: int | None) -> dict:
    """Full vs tiled vs two-stage rows from benchmarks.highres (another module owns the method)."""
    try:
        from benchmarks.highres import measure_highres
    except ImportError as e:
        return {"available": False, "reason": f"benchmarks.highres cannot be imported ({e})", "rows": []}
    import functools

    factory = functools.partial(build_engine, spec, threads)
    try:
        rows = measure_highres(factory, image_path, sizes, hole_fraction=0.05)
    except Exception as e:  # noqa: BLE001
        log.warning("high-res measurement failed: %s", e)
        return {"available": False, "reason": f"measure_highres failed: {type(e).__name__}: {e}", "rows": []}
    return {"available": True, "engine": spec["name"], "image": str(image_path), "rows": rows}


def triton_rows(url: str | None, onnx: str | None, sizes: list[tuple[int, int]], n: int, concurrency: int,
                threads: int) -> dict:
    """Triton vs in-process onnxruntime (benchmarks.triton_bench). Without ``url`` a CPU server is
    started on a temporary repository serving ``onnx`` and stopped afterwards."""
    import tempfile

    from benchmarks.triton_bench import measure_triton

    server = None
    tmp = tempfile.TemporaryDirectory(prefix="glama-bench-triton-")
    try:
        if not url:
            if onnx is None:
                return {"available": False, "reason": "no matmul ONNX export to serve", "rows": []}
            from glama_deploy.triton.repo import RepoOptions, build_repo
            from glama_deploy.triton.server import TritonServer

            repo = Path(tmp.name) / "repo"
            build_repo(repo, RepoOptions(flavour="cpu", threads=threads, generator_instances=1,
                                         max_batch_size=max(1, concurrency)), onnx=onnx)
            server = TritonServer(repo).start()
            url = server.http_url
        rows = measure_triton(url, sizes, n, concurrency, onnx=onnx, threads=threads)
    except Exception as e:  # noqa: BLE001 - the rest of the report stands without Triton
        log.warning("Triton measurement failed: %s", e)
        return {"available": False, "reason": f"{type(e).__name__}: {e}", "rows": []}
    finally:
        if server is not None:
            server.stop()
        tmp.cleanup()
    return {"available": True, "url": url, "started_server": server is not None, "rows": rows,
            "threads": threads, "concurrency": concurrency}
