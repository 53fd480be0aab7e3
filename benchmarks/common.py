"""Shared measurement helpers: statistics, machine/version info, sgemm peak, FLOP counts, memory.

Nothing here depends on an engine; :mod:`benchmarks.run` puts the pieces together.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_HIGHRES = ROOT.parent / "shared" / "data" / "highres"  # beside the checkout, as in development
MB = 1024 * 1024


# ----------------------------------------------------------------------------- statistics
def latency_stats(samples_s: list[float], batch: int = 1) -> dict:
    """p50/p90/p99/mean/min/max in milliseconds and throughput (images/s at the median).

    Percentiles use linear interpolation; with n samples, p90 and p99 are only meaningful when
    n >= 10 and n >= 100 (below that they approach the maximum), so ``n`` is always reported.
    """
    a = np.asarray(samples_s, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    q1, q3 = np.percentile(a, [25, 75])
    return {"n": int(a.size), "p50_ms": 1e3 * p50, "p90_ms": 1e3 * p90, "p99_ms": 1e3 * p99,
            "mean_ms": 1e3 * a.mean(), "min_ms": 1e3 * a.min(), "max_ms": 1e3 * a.max(),
            "iqr_rel": float((q3 - q1) / p50) if p50 > 0 else 0.0,
            "images_per_s": batch / p50 if p50 > 0 else float("inf")}


def paired_ratio(a_s: list[float], b_s: list[float]) -> dict | None:
    """Median of per-round ratios a/b (rounds are interleaved, so drift cancels in each pair).

    Returns the median, its quartiles and the ratio of the plain medians for comparison.
    """
    n = min(len(a_s), len(b_s))
    if n == 0:
        return None
    r = np.asarray(a_s[:n], dtype=np.float64) / np.asarray(b_s[:n], dtype=np.float64)
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return {"ratio": float(med), "q1": float(q1), "q3": float(q3), "pairs": int(n),
            "ratio_of_medians": float(np.median(a_s) / np.median(b_s))}


# ----------------------------------------------------------------------------- machine info
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return sorted(f for f in ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                                          "amx_tile") if f in have)
    except OSError:
        pass
    return []


def _gpus() -> list[dict]:
    try:
        import torch

        if torch.cuda.is_available():
            return [{"name": torch.cuda.get_device_name(i),
                     "memory_mib": torch.cuda.get_device_properties(i).total_memory // MB}
                    for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - machine info must never fail the report
        pass
    return []


def machine_info() -> dict:
    """CPU model, cores (logical, physical, usable), memory, load, GPUs, OS."""
    try:
        import psutil

        mem_total = psutil.virtual_memory().total // MB
        mem_avail = psutil.virtual_memory().available // MB
        physical = psutil.cpu_count(logical=False)
    except ImportError:
        mem_total = mem_avail = physical = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu_model": _cpu_model(), "cpu_flags": _cpu_flags(), "logical_cores": os.cpu_count(),
            "physical_cores": physical, "usable_cores": usable, "memory_total_mib": mem_total,
            "memory_available_mib": mem_avail, "load_average": list(os.getloadavg()),
            "gpus": _gpus(), "platform": platform.platform(), "hostname": platform.node()}


def versions() -> dict:
    """Versions of python and every package that can affect the numbers (None = not installed)."""
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "onnxruntime", "numpy", "onnx", "onnxscript", "matplotlib", "tensorrt",
                 "tritonclient"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - any import failure means "not usable here"
            out[name] = None
    try:
        import torch

        out["torch_mkldnn"] = bool(torch.backends.mkldnn.is_available())
        out["torch_mkl"] = bool(torch.backends.mkl.is_available())
        out["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


def git_revision(cwd: Path = ROOT) -> str:
    """Full ``git rev-parse HEAD`` of the checkout, "unknown" outside a repo (or before the first
    commit); a "-dirty" suffix when tracked files changed."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd,
                             timeout=10)
        if rev.returncode != 0 or not rev.stdout.strip():
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=cwd, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- hardware peak
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def sgemm_peak(n: int = 2048, repeats: int = 5, threads: int = 1) -> dict:
    """Best achieved GFLOP/s of an n x n x n float32 matrix multiply (2*n^3 FLOPs) with ``threads``
    threads, in torch (oneDNN/MKL) and numpy (its BLAS). Runs in a fresh process whose BLAS thread
    variables are set to ``threads``: numpy's BLAS reads them only when it is loaded, so in this
    process it would use every core. The best of ``repeats`` is kept: interference from other
    processes only ever slows a run down, so the maximum is the closest to the hardware limit."""
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    code = ("import json; from benchmarks.common import _sgemm_here; "
            f"print(json.dumps(_sgemm_here({int(n)}, {int(repeats)}, {int(threads)})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"sgemm measurement failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _sgemm_here(n: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a_np = rng.random((n, n), dtype=np.float32)
    b_np = rng.random((n, n), dtype=np.float32)
    a, b = torch.from_numpy(a_np), torch.from_numpy(b_np)
    out = {"n": n, "flops": flops, "threads": torch.get_num_threads(),
           "blas_env": {v: os.environ.get(v) for v in THREAD_VARS}}
    for name, fn in (("torch", lambda: torch.mm(a, b)), ("numpy", lambda: a_np @ b_np)):
        fn()  # warm-up (thread pools, page faults)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        out[f"{name}_gflops"] = flops / best / 1e9
    out["peak_gflops"] = max(out["torch_gflops"], out["numpy_gflops"])
    return out


# ----------------------------------------------------------------------------- FLOPs
def count_flops(config, height: int, width: int, backend: str) -> dict:
    """FLOPs of one forward pass of the generator for one (height x width) image, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no data, no compute).

    What is counted: convolutions and transposed convolutions (``aten.convolution``) and matrix
    products (``aten.mm``/``bmm``/``matmul``: the DFT-as-matmul of the ``matmul`` backend), at
    2 FLOPs per multiply-add. Not counted: ``torch.fft`` (FlopCounterMode has no formula for it;
    O(N log N), well under 1% here), BatchNorm, activations, padding, elementwise ops.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from glama_deploy.model import build_generator

    with torch.device("meta"):
        model = build_generator(config)
    model = model.eval().set_spectral_backend(backend)
    image = torch.empty(1, 3, height, width, device="meta")
    mask = torch.empty(1, 1, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(image, mask)
    by_op = {str(k).replace("aten.", ""): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float | None:
    """Current resident set size of this process in MiB."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float:
    """High-water mark of the resident set size of this process in MiB (VmHWM, else ru_maxrss)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            kb //= 1024
    return kb / 1024


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- inputs
def make_inputs(height: int, width: int, batch: int = 1, hole_fraction: float = 0.25,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random image (N,3,H,W) in [0,1] and a centred rectangular hole covering ~hole_fraction.

    Speed does not depend on the pixel values (no data-dependent branches in the network), so
    noise is as good as a photo here and needs no file.
    """
    rng = np.random.default_rng(seed)
    image = rng.random((batch, 3, height, width), dtype=np.float32)
    mask = np.zeros((batch, 1, height, width), np.float32)
    side = float(np.sqrt(hole_fraction))
    hh, ww = max(1, round(height * side)), max(1, round(width * side))
    top, left = (height - hh) // 2, (width - ww) // 2
    mask[:, :, top:top + hh, left:left + ww] = 1.0
    return image, mask
