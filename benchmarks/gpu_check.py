"""Everything to check on the day an NVIDIA GPU is at hand, in one command and one JSON.

    benchmarks/gpu_check.sh [--out reports/gpu_check] [--no-install] [--models bundled,lama-fourier]

Steps (each one timed and recorded; a failure is recorded and the next step runs, except that
nothing after the GPU probe can run without a GPU):
  1. prepare     fp32 ONNX exports and int8 QDQ models of the bundled model and of trained-scale
                 lama-fourier (CPU; cached in --cache-dir)
  2. gpu-probe   nvidia-smi and a CUDA device: the first step that needs the GPU
  3. install     pip install -e .[gpu] (TensorRT, cuda-python, tritonclient)
  4. plans       fp32, fp16 and int8 TensorRT plans of each model (export.tensorrt)
  5. psnr        each plan's in-hole PSNR against the fp32 onnxruntime output on held-out photos
  6. latency     each plan's latency at 512x512, batch 1 (median of 10)
  7. pytest-gpu  pytest -m gpu
  8. benchmark   benchmarks/run.py --device cuda --quick
Writes OUT/gpu_check.json (steps, latencies, PSNR, every failure). Exit code 0 = all ran and
passed, 1 = some step failed, 3 = stopped (no GPU). Budget: under 10 minutes on
a GPU machine with a warm cache (the exports take a few minutes cold).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "int8")


class Stop(RuntimeError):
    """The remaining steps cannot run here (the message says why)."""


def _run(cmd: list[str], timeout: float) -> dict:
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    out = {"cmd": " ".join(cmd), "returncode": p.returncode, "tail": (p.stdout + p.stderr)[-3000:]}
    if p.returncode != 0:
        raise RuntimeError(f"exit {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return out


def prepare(models: list[str], cache: Path) -> dict:
    from benchmarks.precision_quality import model_files

    return {m: model_files(m, cache) for m in models}


def gpu_probe() -> dict:
    smi = shutil.which("nvidia-smi")
    info: dict = {"nvidia_smi": smi}
    if smi:
        p = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=60)
        info["gpus"] = p.stdout.strip().splitlines()
    from glama_deploy.engines.tensorrt_ import cuda_device_name

    info["cuda_device_0"] = cuda_device_name(0)
    if not smi and info["cuda_device_0"] is None:
        raise Stop("no NVIDIA GPU on this machine: nvidia-smi is not on PATH and no CUDA device answers "
                   "(needs an NVIDIA driver; cuda-python comes with the gpu extra). The remaining steps "
                   "(install, TensorRT plans, PSNR, latency, pytest -m gpu, benchmark --device cuda) need one")
    return info


def build_plans(files: dict, out: Path) -> dict:
    from export.tensorrt import build_engine, make_profile

    res = {}
    for model, f in files.items():
        for prec in PRECISIONS:
            key = f"{model}/{prec}"
            try:
                onnx = f["int8_onnx"] if prec == "int8" else f["fp32_onnx"]
                plan = out / f"{model}-{prec}.plan"
                meta = build_engine(onnx, plan, profile=make_profile((1, 256, 256), (1, 512, 512), (1, 1024, 1024)),
                                    precision=prec)
                res[key] = {"plan": str(plan), "build_s": meta["build_seconds"], "ok": True}
            except Exception as e:  # noqa: BLE001 - recorded, the next plan is built
                res[key] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    return res


def plan_quality_and_latency(files: dict, plans: dict) -> tuple[dict, dict]:
    import numpy as np

    from benchmarks.precision_quality import measure
    from export.quantize import photo_split
    from glama_deploy.engines import create_engine
    from glama_deploy.engines.onnx_ import OnnxEngine

    holdout = photo_split()[1]
    psnr, lat = {}, {}
    for model, f in files.items():
        engines = {"fp32": OnnxEngine(f["fp32_onnx"], threads=2)}
        for prec in PRECISIONS:
            p = plans.get(f"{model}/{prec}", {})
            if p.get("ok"):
                try:
                    engines[f"trt-{prec}"] = create_engine("tensorrt", p["plan"])
                except Exception as e:  # noqa: BLE001
                    p.update(ok=False, error=f"load: {type(e).__name__}: {e}")
        psnr[model] = measure(engines, holdout[:4], 256, 1)
        image = np.random.default_rng(0).random((1, 3, 512, 512), dtype=np.float32)
        mask = np.zeros((1, 1, 512, 512), np.float32)
        mask[..., 128:384, 128:384] = 1
        for name, e in engines.items():
            if name == "fp32":
                continue
            for _ in range(3):
                e(image, mask)
            ts = []
            for _ in range(10):
                t = time.perf_counter()
                e(image, mask)
                ts.append(time.perf_counter() - t)
            lat[f"{model}/{name}"] = {"p50_ms": 1e3 * float(np.median(ts)), "min_ms": 1e3 * min(ts)}
    return psnr, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="reports/gpu_check")
    ap.add_argument("--models", default="bundled,lama-fourier")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "glama-deploy" / "benchmarks"))
    ap.add_argument("--no-install", action="store_true", help="skip pip install -e .[gpu]")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    if not models or any(m not in ("bundled", "lama-fourier") for m in models):
        print("error: --models takes bundled and/or lama-fourier", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "steps": [], "failures": [],
                    "latency": {}, "psnr_vs_fp32": {}, "stopped": None}
    state: dict = {}

    def step(name: str, fn) -> bool:
        t = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        rec = {"step": name}
        try:
            rec["result"] = fn()
            rec["ok"] = True
        except Stop as e:
            rec.update(ok=False, stopped=str(e))
            report["stopped"] = {"at": name, "why": str(e)}
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the run goes on
            rec.update(ok=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2000:])
            report["failures"].append({"step": name, "error": rec["error"]})
        rec["seconds"] = round(time.perf_counter() - t, 1)
        report["steps"].append(rec)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"[gpu_check] {name}: {'ok' if rec['ok'] else rec.get('stopped') or rec.get('error')} "
              f"({rec['seconds']} s)", file=sys.stderr, flush=True)
        return rec["ok"]

    py = sys.executable
    step("prepare", lambda: state.setdefault("files", prepare(models, Path(args.cache_dir))))
    if step("gpu-probe", gpu_probe):
        if not args.no_install:
            step("install", lambda: _run([py, "-m", "pip", "install", "-q", "-e", ".[gpu]"], 900))
        if "files" in state:
            step("plans", lambda: state.setdefault("plans", build_plans(state["files"], out)))
            for k, v in state.get("plans", {}).items():
                if not v.get("ok"):
                    report["failures"].append({"step": f"plan {k}", "error": v.get("error")})

            def quality() -> dict:
                psnr, lat = plan_quality_and_latency(state["files"], state.get("plans", {}))
                report["psnr_vs_fp32"], report["latency"] = psnr, lat
                return {"models": list(psnr)}

            step("psnr+latency", quality)
        step("pytest-gpu", lambda: _run([py, "-m", "pytest", "-q", "-m", "gpu", "tests/"], 1200))
        step("benchmark", lambda: _run([py, "benchmarks/run.py", "--device", "cuda", "--quick",
                                        "--out", str(out / "benchmark")], 1200))
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if report["stopped"]:
        print(f"[gpu_check] stopped at {report['stopped']['at']}: {report['stopped']['why']}", file=sys.stderr)
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} ({len(report['failures'])} failure(s))", file=sys.stderr)
    return 1 if report["failures"] else 3 if report["stopped"] else 0


if __name__ == "__main__":
    sys.exit(main())
