"""Benchmark every engine available here and write a report that says which engine and mode to pick.

    python benchmarks/run.py [--engines torch-fft,ort-matmul,...] [--sizes 256,512,1024,2048]
                             [--config lama-fourier] [--out reports/] [--quick]

What is measured (one run, one machine):
  latency   p50/p90/p99 per engine, size and batch. Engines are timed *interleaved*: each round
            calls every engine once on the same input, in a rotated order, so load from other
            processes and clock drift hit all engines alike; ratios are medians of per-round ratios.
  memory    peak RSS (VmHWM) of a fresh subprocess per engine/size/batch (one call after a
            load), so cases cannot inherit each other's heap; GPU peak with CUDA.
  FLOPs     counted by torch.utils.flop_counter on the model (conv + matmul), vs this machine's
            sgemm peak measured in the same run.
  high-res  full-frame vs tiled vs two-stage on 2560x1600 and 7680x4320 (benchmarks.highres).
  Triton    when --triton-url (or GLAMA_TRITON_URL) names a server (benchmarks.triton_bench).

Writes OUT/benchmark.json, OUT/benchmark.md, OUT/latency.png, OUT/highres.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.engines import (  # noqa: E402
    ALL_ENGINES,
    DESCRIPTIONS,
    LOCAL_ENGINES,
    build_engine,
    prepare_onnx,
    prepare_weights,
    tensorrt_status,
    triton_status,
)

log = logging.getLogger("benchmarks")
SCHEMA = "glama-deploy/benchmark/v1"
REFERENCE_ENGINE = "torch-fft"
HIGHRES_DEFAULT = "2560x1600,7680x4320"
QUICK = {"config": "tiny", "sizes": "128,256", "batches": "1,2", "min_iters": 3, "max_iters": 20,
         "budget_s": 1.5, "highres_sizes": "640x400", "sgemm_n": 1024, "memory_isolation": "engine"}


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


# ----------------------------------------------------------------------------- timing
def time_interleaved(engines: dict, image: np.ndarray, mask: np.ndarray, *, warmup: int, min_iters: int,
                     max_iters: int, budget_s: float) -> dict:
    """Warm every engine up, then time rounds of one call per engine, rotating the order.

    Stops when every engine has ``min_iters`` samples and either ``budget_s`` seconds of timed
    rounds passed or ``max_iters`` rounds ran. Returns {name: {"samples": [...], ...}}.
    """
    out: dict[str, dict] = {}
    live: list[str] = []
    ref = None
    for name, eng in engines.items():
        try:
            for _ in range(max(1, warmup)):
                y = eng(image, mask)
            out[name] = {"samples": [], "first_output": y[:1]}
            live.append(name)
        except Exception as e:  # noqa: BLE001 - one engine failing must not end the report
            log.warning("%s failed at %s: %s", name, image.shape, e)
            out[name] = {"samples": [], "error": f"{type(e).__name__}: {e}"}
    if REFERENCE_ENGINE in live:
        ref = out[REFERENCE_ENGINE]["first_output"]
    for name in live:
        y = out[name].pop("first_output")
        if ref is not None:
            out[name]["max_abs_diff_vs_torch_fft"] = float(np.abs(y - ref).max())
    t0 = time.perf_counter()
    rounds = 0
    while live:
        k = rounds % len(live)
        for name in live[k:] + live[:k]:
            t = time.perf_counter()
            try:
                engines[name](image, mask)
            except Exception as e:  # noqa: BLE001
                out[name]["error"] = f"{type(e).__name__}: {e}"
                continue
            out[name]["samples"].append(time.perf_counter() - t)
        live = [n for n in live if "error" not in out[n]]
        rounds += 1
        if rounds >= max_iters or (rounds >= min_iters and time.perf_counter() - t0 >= budget_s):
            break
    return out


# ----------------------------------------------------------------------------- memory
def memory_worker(payload: dict) -> dict:
    """Runs in a fresh process: build one engine, then for each case (ascending) reset the RSS
    high-water mark, run ``calls`` inferences and read the peak. Prints nothing; returns a dict."""
    threads = payload.get("threads")
    if payload["spec"]["kind"] == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
    rss_start = common.rss_mb()
    t = time.perf_counter()
    engine = build_engine(payload["spec"], threads=threads, device=payload.get("device", "cpu"))
    load_s = time.perf_counter() - t
    common.release_memory()
    rss_loaded = common.rss_mb()
    cuda = payload.get("device", "cpu").startswith("cuda")
    results = []
    for h, w, b in payload["cases"]:
        image, mask = common.make_inputs(h, w, b)
        common.release_memory()
        reset = common.reset_peak_rss()
        if cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        row = {"size": [h, w], "batch": b, "rss_before_mb": common.rss_mb(), "hwm_reset": reset}
        try:
            for _ in range(payload.get("calls", 1)):
                y = engine(image, mask)
                del y
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e}"
        row["peak_rss_mb"] = common.peak_rss_mb()
        row["added_rss_mb"] = row["peak_rss_mb"] - rss_loaded
        row["inputs_mb"] = (image.nbytes + mask.nbytes) / common.MB
        if cuda:
            import torch

            row["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / common.MB
        results.append(row)
        del image, mask
    return {"rss_start_mb": rss_start, "rss_loaded_mb": rss_loaded, "load_s": load_s, "cases": results}


def run_memory_worker(payload: dict, timeout: float) -> dict:
    """Run :func:`memory_worker` in a subprocess and return its result (or an error)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", json.dumps(payload)]
    env = dict(os.environ, OMP_NUM_THREADS=str(payload.get("threads") or ""))
    if not payload.get("threads"):
        env.pop("OMP_NUM_THREADS")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=str(common.ROOT))
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"worker exited with {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def triton_rows(url: str, sizes: list[tuple[int, int]], n: int, concurrency: int) -> dict:
    from benchmarks.triton_bench import measure_triton

    try:
        rows = measure_triton(url, sizes, n, concurrency)
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"measure_triton failed: {type(e).__name__}: {e}", "rows": []}
    return {"available": True, "url": url, "rows": rows}


# ----------------------------------------------------------------------------- report assembly
def summarize(report: dict) -> dict:
    """The numbers a reader wants first: the three ratios and the best engine's share of peak."""
    rows = [r for r in report["rows"] if "latency" in r]
    ratios = report["ratios"]
    out: dict = {}

    def pick(key: str, size: int) -> dict | None:
        return next((r for r in ratios if r["key"] == key and r["size"][0] == size and r["batch"] == 1), None)

    sizes = sorted({r["size"][0] for r in rows if r["size"][0] == r["size"][1]})
    at = 512 if 512 in sizes else (sizes[len(sizes) // 2] if sizes else None)
    if at is not None:
        for key in ("ort-matmul/torch-fft", "ort-matmul/ort-dft", "torch-matmul/torch-fft"):
            r = pick(key, at) or next((x for x in ratios if x["key"] == key and x["batch"] == 1), None)
            if r:
                out[key] = {"size": r["size"], "latency_ratio": r["ratio"], "speedup": 1 / r["ratio"],
                            "q1": r["q1"], "q3": r["q3"], "pairs": r["pairs"]}
    if rows:
        best = max(rows, key=lambda r: r.get("peak_fraction_p50") or 0)
        out["best_peak_fraction"] = {k: best.get(k) for k in ("engine", "size", "batch", "gflops_p50",
                                                              "peak_fraction_p50", "gflops_best",
                                                              "peak_fraction_best")}
        out["best_peak_fraction"]["sgemm_peak_gflops"] = report["sgemm"]["peak_gflops"]
        fastest = {}
        for r in rows:
            key = f"{size_label(r['size'])}/b{r['batch']}"
            if key not in fastest or r["latency"]["p50_ms"] < fastest[key]["p50_ms"]:
                fastest[key] = {"engine": r["engine"], "p50_ms": r["latency"]["p50_ms"]}
        out["fastest"] = fastest
    return out


def build_rows(timings: dict, memory: dict, flops: dict, peak_gflops: float) -> tuple[list, list]:
    """Merge timing, memory and FLOPs into one row per engine/size/batch, plus paired ratios."""
    rows, ratios = [], []
    for (hw, batch), per_engine in timings.items():
        model_flops = flops[hw]["fft"]["total"]
        for name, t in per_engine.items():
            row = {"engine": name, "description": DESCRIPTIONS[name], "size": list(hw), "batch": batch}
            if t.get("samples"):
                lat = common.latency_stats(t["samples"], batch)
                row["latency"] = lat
                row["images_per_s"] = lat["images_per_s"]
                executed = flops[hw]["matmul" if "matmul" in name else "fft"]["total"]
                row["flops_per_image"] = model_flops
                row["executed_flops_per_image"] = executed
                row["gflops_p50"] = model_flops * batch / (lat["p50_ms"] / 1e3) / 1e9
                row["gflops_best"] = model_flops * batch / (lat["min_ms"] / 1e3) / 1e9
                row["peak_fraction_p50"] = row["gflops_p50"] / peak_gflops
                row["peak_fraction_best"] = row["gflops_best"] / peak_gflops
            for k in ("error", "max_abs_diff_vs_torch_fft"):
                if k in t:
                    row[k] = t[k]
            m = memory.get((name, hw, batch))
            if m:
                row["memory"] = m
            rows.append(row)
        for a, b in (("ort-matmul", "torch-fft"), ("ort-matmul", "ort-dft"), ("torch-matmul", "torch-fft"),
                     ("ort-dft", "torch-fft")):
            if per_engine.get(a, {}).get("samples") and per_engine.get(b, {}).get("samples"):
                r = common.paired_ratio(per_engine[a]["samples"], per_engine[b]["samples"])
                ratios.append({"key": f"{a}/{b}", "size": list(hw), "batch": batch, **r})
    return rows, ratios


def _fmt(v, spec: str = ".0f", missing: str = "-") -> str:
    return missing if v is None else format(v, spec)


def to_markdown(report: dict) -> str:
    """The human-readable report (same numbers as the JSON)."""
    m, v, s = report["machine"], report["versions"], report["sgemm"]
    L = [f"# Benchmark: {report['config']} ({report['created']})", "",
         f"- machine: {m['cpu_model']}, {m['usable_cores']} usable cores ({', '.join(m['cpu_flags'])}), "
         f"{_fmt(m['memory_total_mb'])} MB RAM, load average at start {m['load_average'][0]:.1f}; "
         f"GPUs: {', '.join(g['name'] for g in m['gpus']) or 'none'}",
         f"- versions: python {v['python']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
         f"numpy {v['numpy']}; git {report['git_revision']}",
         f"- threads per engine: {report['threads']}; device: {report['device']}",
         f"- sgemm peak ({s['n']}x{s['n']} float32, best of runs): {s['peak_gflops']:.1f} GFLOP/s "
         f"(torch {s['torch_gflops']:.1f}, numpy {s['numpy_gflops']:.1f})",
         f"- wall time: {report['wall_s']:.0f} s" + (" (--quick)" if report["quick"] else ""), ""]
    summ = report["summary"]
    if summ:
        L += ["## Summary", ""]
        names = {"ort-matmul/torch-fft": "onnxruntime (matmul DFT) vs torch eager (fft)",
                 "ort-matmul/ort-dft": "onnxruntime: matmul-DFT graph vs native DFT graph",
                 "torch-matmul/torch-fft": "torch eager: matmul DFT vs torch.fft"}
        for key, label in names.items():
            if key in summ:
                r = summ[key]
                L.append(f"- {label} at {size_label(r['size'])}, batch 1: latency ratio {r['latency_ratio']:.2f} "
                         f"(quartiles {r['q1']:.2f}-{r['q3']:.2f}, {r['pairs']} interleaved pairs) = "
                         f"{r['speedup']:.2f}x speed")
        if "best_peak_fraction" in summ:
            b = summ["best_peak_fraction"]
            L.append(f"- closest to the hardware limit: {b['engine']} at {size_label(b['size'])} batch "
                     f"{b['batch']}: {b['gflops_p50']:.1f} GFLOP/s at p50 = {100 * b['peak_fraction_p50']:.0f}% "
                     f"of the {b['sgemm_peak_gflops']:.1f} GFLOP/s sgemm peak "
                     f"(best call: {100 * b['peak_fraction_best']:.0f}%)")
        L.append("")
    L += ["## Latency, throughput, memory", "",
          "| engine | size | batch | p50 ms | p90 ms | p99 ms | n | img/s | peak RSS MB | +RSS MB "
          "| GFLOP/img | GFLOP/s | % sgemm peak | max diff vs torch |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        mem = r.get("memory", {})
        if "latency" not in r:
            L.append(f"| {r['engine']} | {size_label(r['size'])} | {r['batch']} | failed: "
                     f"{r.get('error', '?')[:80]} |||||||||||")
            continue
        lat = r["latency"]
        L.append(f"| {r['engine']} | {size_label(r['size'])} | {r['batch']} | {lat['p50_ms']:.0f} | "
                 f"{lat['p90_ms']:.0f} | {lat['p99_ms']:.0f} | {lat['n']} | {r['images_per_s']:.2f} | "
                 f"{_fmt(mem.get('peak_rss_mb'))} | {_fmt(mem.get('added_rss_mb'))} | "
                 f"{r['flops_per_image'] / 1e9:.1f} | {r['gflops_p50']:.1f} | "
                 f"{100 * r['peak_fraction_p50']:.0f}% | {_fmt(r.get('max_abs_diff_vs_torch_fft'), '.1e')} |")
    L.append("")
    if report["ratios"]:
        L += ["## Paired latency ratios (same run, interleaved; < 1 = first engine faster)", "",
              "| ratio | size | batch | median | quartiles | pairs |", "|---|---|---|---|---|---|"]
        for r in report["ratios"]:
            L.append(f"| {r['key']} | {size_label(r['size'])} | {r['batch']} | {r['ratio']:.2f} | "
                     f"{r['q1']:.2f}-{r['q3']:.2f} | {r['pairs']} |")
        L.append("")
    L += ["## Engines not measured", ""]
    skipped = [e for e in report["engines"] if not e["available"]]
    L += [f"- {e['name']}: {e['reason']}" for e in skipped] or ["- (none)"]
    L.append("")
    hr = report["highres"]
    L += ["## High resolution (~5% hole)", ""]
    if hr.get("rows"):
        keys = [k for k in hr["rows"][0] if not isinstance(hr["rows"][0][k], (dict, list))]
        L += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in hr["rows"]:
            L.append("| " + " | ".join(_fmt(r.get(k), ".1f") if isinstance(r.get(k), float) else str(r.get(k, "-"))
                                       for k in keys) + " |")
        L.append("")
        L.append(f"engine: {hr.get('engine')}; image: {hr.get('image')}")
    else:
        L.append(f"not measured: {hr.get('reason', 'skipped')}")
    L.append("")
    tr = report["triton"]
    L += ["## Triton", ""]
    if tr.get("rows"):
        keys = [k for k in tr["rows"][0] if not isinstance(tr["rows"][0][k], (dict, list))]
        L += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in tr["rows"]:
            L.append("| " + " | ".join(_fmt(r.get(k), ".1f") if isinstance(r.get(k), float) else str(r.get(k, "-"))
                                       for k in keys) + " |")
    else:
        L.append(f"not measured: {tr.get('reason', 'skipped')}")
    L += ["", "## FLOPs per image (counted)", "",
          "| size | conv GFLOP (all engines) | + matmul-DFT GFLOP | DFT share |", "|---|---|---|---|"]
    for key, f in report["flops"].items():
        conv, mm = f["fft"]["total"], f["matmul"]["total"]
        L.append(f"| {key} | {conv / 1e9:.2f} | {(mm - conv) / 1e9:.2f} | {100 * (mm - conv) / mm:.1f}% |")
    L += ["", "## Method", ""] + [f"- {k}: {t}" for k, t in report["method"].items()] + [""]
    return "\n".join(L)


def plot(report: dict, out: Path) -> list[str]:
    """latency.png (latency, throughput, share of peak vs size) and highres.png (memory, time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = [r for r in report["rows"] if "latency" in r and r["size"][0] == r["size"][1]]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    engines = sorted({r["engine"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    for name in engines:
        b1 = sorted((r for r in rows if r["engine"] == name and r["batch"] == 1), key=lambda r: r["size"][0])
        if b1:
            x = [r["size"][0] for r in b1]
            p50 = [r["latency"]["p50_ms"] for r in b1]
            lo = [p - r["latency"]["min_ms"] for p, r in zip(p50, b1, strict=True)]
            hi = [r["latency"]["p90_ms"] - p for p, r in zip(p50, b1, strict=True)]
            line = axes[0].errorbar(x, p50, yerr=[lo, hi], marker="o", capsize=3, label=name)[0]
            axes[2].plot(x, [100 * r["peak_fraction_p50"] for r in b1], marker="o", color=line.get_color(),
                         label=name)
        else:
            line = None
        for i, b in enumerate(batches):
            rb = sorted((r for r in rows if r["engine"] == name and r["batch"] == b), key=lambda r: r["size"][0])
            if rb:
                axes[1].plot([r["size"][0] for r in rb], [r["images_per_s"] for r in rb], marker="o",
                             linestyle=["-", "--", ":", "-."][i % 4],
                             color=line.get_color() if line else None, label=f"{name} b{b}")
    axes[0].set(xscale="log", yscale="log", xlabel="image side (px, square)", ylabel="latency p50 (ms)",
                title="Latency, batch 1 (bars: min..p90)")
    axes[1].set(xscale="log", yscale="log", xlabel="image side (px, square)", ylabel="images / s",
                title="Throughput at p50")
    axes[2].set(xscale="log", xlabel="image side (px, square)", ylabel="% of sgemm peak",
                title=f"Achieved share of {report['sgemm']['peak_gflops']:.0f} GFLOP/s sgemm peak")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        if rows:
            ticks = sorted({r["size"][0] for r in rows})
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off() if ax is not axes[1] and ax is not axes[0] else None
    fig.suptitle(f"{report['config']} on {report['machine']['cpu_model']}, {report['threads']} thread(s)")
    fig.tight_layout()
    written.append(_save_fig(fig, out / "latency.png"))
    plt.close(fig)

    hr = report["highres"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    hrows = hr.get("rows") or []
    mem_key = next((k for k in ("peak_rss_mb", "peak_mb", "peak_memory_mb") if hrows and k in hrows[0]), None)
    time_key = next((k for k in ("time_s", "seconds", "wall_s", "latency_s") if hrows and k in hrows[0]), None)
    if hrows and mem_key:
        sizes = list(dict.fromkeys(str(r.get("size", r.get("image_size", "?"))) for r in hrows))
        modes = list(dict.fromkeys(str(r.get("mode", "?")) for r in hrows))
        width = 0.8 / max(1, len(modes))
        for j, mode in enumerate(modes):
            for ax, key, unit in ((axes[0], mem_key, "peak memory (MB)"), (axes[1], time_key, "time (s)")):
                if key is None:
                    continue
                vals = []
                for s in sizes:
                    r = next((r for r in hrows if str(r.get("size", r.get("image_size", "?"))) == s
                              and str(r.get("mode")) == mode), {})
                    vals.append(r.get(key) if isinstance(r.get(key), (int, float)) else np.nan)
                ax.bar(np.arange(len(sizes)) + j * width, vals, width, label=mode)
                ax.set_xticks(np.arange(len(sizes)) + width * (len(modes) - 1) / 2, sizes)
                ax.set_ylabel(unit)
        axes[0].set_title("Peak memory: full frame vs tiled vs two-stage")
        axes[1].set_title("Time")
        for ax in axes:
            ax.legend(fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
    else:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0, 0.5, f"high-res rows not measured:\n{hr.get('reason', 'skipped')}", wrap=True)
    fig.suptitle(f"High resolution, ~5% hole ({hr.get('engine', '-')})")
    fig.tight_layout()
    written.append(_save_fig(fig, out / "highres.png"))
    plt.close(fig)
    return written


def _save_fig(fig, path: Path) -> str:
    tmp = path.with_name("." + path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)
    return str(path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", default=",".join(ALL_ENGINES),
                    help=f"comma list from {', '.join(ALL_ENGINES)} (default: all; unavailable ones are "
                         "listed with the reason)")
    ap.add_argument("--sizes", default="256,512,1024,2048", help="square sides or WxH, comma separated")
    ap.add_argument("--batches", default="1,2", help="batch sizes (default 1,2)")
    ap.add_argument("--large-batch-max-side", type=int, default=0,
                    help="run batches > 1 only up to this image side (0 = every size)")
    ap.add_argument("--config", default="lama-fourier", help="generator config (tiny, lama-fourier, big-lama)")
    ap.add_argument("--weights", help="weights file (.safetensors); default: seeded random weights")
    ap.add_argument("--out", default="reports", help="output folder (default reports/)")
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "glama-deploy" / "benchmarks"),
                    help="where weights and ONNX exports are cached between runs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per engine")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up calls per engine and case")
    ap.add_argument("--min-iters", type=int, default=5, help="timed calls per engine and case, at least")
    ap.add_argument("--max-iters", type=int, default=50, help="timed calls per engine and case, at most")
    ap.add_argument("--budget-s", type=float, default=30.0,
                    help="keep timing rounds until this many seconds passed (after --min-iters)")
    ap.add_argument("--memory-isolation", choices=("case", "engine", "none"), default="case",
                    help="case: a fresh process per engine/size/batch (default); engine: one process per "
                         "engine, peak reset between cases; none: skip memory")
    ap.add_argument("--highres-image", default=None,
                    help="photo for the high-res rows (default: a bundled sample, resized)")
    ap.add_argument("--highres-sizes", default=HIGHRES_DEFAULT, help="WxH list; '' to skip")
    ap.add_argument("--highres-engine", default="ort-matmul", help="engine for the high-res rows")
    ap.add_argument("--triton-url", default=os.environ.get("GLAMA_TRITON_URL"),
                    help="Triton server URL (default $GLAMA_TRITON_URL)")
    ap.add_argument("--triton-concurrency", type=int, default=2)
    ap.add_argument("--sgemm-n", type=int, default=2048, help="matrix side for the sgemm peak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true",
                    help="small model and sizes, few iterations: the whole report in ~1-2 min")
    ap.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    ap.add_argument("--memory-worker", help=argparse.SUPPRESS)
    return ap


def apply_quick(args, argv: list[str]) -> None:
    """--quick replaces the defaults of every option not given explicitly."""
    given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
    for k, v in QUICK.items():
        if k not in given:
            setattr(args, k, v)


def default_highres_image() -> str | None:
    for folder in (common.ROOT / "glama_deploy" / "assets" / "samples", Path("/work/shared/data/highres")):
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                           and "mask" not in p.stem)
            if files:
                return str(files[0])
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    if args.quick:
        apply_quick(args, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
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
        if any(h % 8 or w % 8 for h, w in sizes):
            log.info("sizes that are not multiples of 8 are padded by the engines")
        if args.threads < 1:
            raise ValueError("--threads must be >= 1")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)

    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    report = {"schema": SCHEMA, "created": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "quick": bool(args.quick), "config": args.config, "threads": args.threads, "device": args.device,
              "args": {k: v for k, v in vars(args).items() if k != "memory_worker"},
              "machine": common.machine_info(), "versions": common.versions(),
              "git_revision": common.git_revision()}

    # -- engines and their files
    try:
        weights, model_id = prepare_weights(args.config, args.weights, cache, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["weights"] = str(weights)
    engines_info, specs, prep = [], {}, {}
    for name in wanted:
        info = {"name": name, "description": DESCRIPTIONS[name], "available": True, "reason": ""}
        try:
            if name.startswith("torch"):
                specs[name] = {"name": name, "kind": "torch", "weights": str(weights),
                               "spectral_backend": name.split("-")[1]}
            elif name.startswith("ort"):
                backend = "matmul" if name == "ort-matmul" else "fft"
                log.info("ONNX export for %s (cached in %s)", name, cache)
                path, secs = prepare_onnx(weights, model_id, backend, cache)
                prep[f"export_{name}_s"] = secs
                specs[name] = {"name": name, "kind": "onnxruntime", "onnx": str(path)}
            elif name == "tensorrt":
                ok, why = tensorrt_status()
                info.update(available=ok, reason=why or "plan building is not wired in this report yet")
                info["available"] = False
            elif name == "triton":
                ok, why = triton_status(args.triton_url)
                info.update(available=ok, reason=why)
        except Exception as e:  # noqa: BLE001 - report the engine as unavailable and carry on
            log.warning("%s unavailable: %s", name, e)
            info.update(available=False, reason=f"{type(e).__name__}: {e}")
        engines_info.append(info)
    report["engines"] = engines_info
    report["prepare"] = prep

    # -- hardware peak (measured again at the end; the best of both is used)
    sg1 = common.sgemm_peak(args.sgemm_n, threads=args.threads)

    # -- FLOPs
    from glama_deploy.model.weights import load_generator

    config_obj = load_generator(weights)[0].config
    all_hw = sorted(set(sizes), key=lambda s: s[0] * s[1])
    flops = {hw: {b: common.count_flops(config_obj, hw[0], hw[1], b) for b in ("fft", "matmul")} for hw in all_hw}

    # -- timing, interleaved
    engines, load_s = {}, {}
    for name, spec in specs.items():
        t = time.perf_counter()
        try:
            engines[name] = build_engine(spec, threads=args.threads, device=args.device)
        except Exception as e:  # noqa: BLE001
            next(i for i in engines_info if i["name"] == name).update(available=False,
                                                                     reason=f"{type(e).__name__}: {e}")
            continue
        load_s[name] = time.perf_counter() - t
    report["load_s"] = load_s
    groups = [(hw, b) for hw in all_hw for b in batches
              if b == 1 or not args.large_batch_max_side or max(hw) <= args.large_batch_max_side]
    timings = {}
    for hw, b in tqdm(groups, desc="timing", unit="case", file=sys.stderr):
        image, mask = common.make_inputs(hw[0], hw[1], b, seed=args.seed)
        timings[(hw, b)] = time_interleaved(engines, image, mask, warmup=args.warmup, min_iters=args.min_iters,
                                            max_iters=args.max_iters, budget_s=args.budget_s)
        log.info("%s b%d: %s", size_label(hw), b, ", ".join(
            f"{n} {1e3 * np.median(t['samples']):.0f} ms" for n, t in timings[(hw, b)].items() if t["samples"]))
    del engines
    common.release_memory()

    # -- memory, in fresh processes
    memory = {}
    if args.memory_isolation != "none":
        jobs = []
        for name, spec in specs.items():
            if not any(i["name"] == name and i["available"] for i in engines_info):
                continue
            cases = [[hw[0], hw[1], b] for hw, b in groups]
            if args.memory_isolation == "case":
                jobs += [(name, spec, [c]) for c in cases]
            else:
                jobs.append((name, spec, cases))
        for name, spec, cases in tqdm(jobs, desc="memory", unit="proc", file=sys.stderr):
            res = run_memory_worker({"spec": spec, "cases": cases, "threads": args.threads,
                                     "device": args.device}, timeout=3600)
            for c in res.get("cases", []):
                memory[(name, tuple(c["size"]), c["batch"])] = {
                    **{k: c[k] for k in c if k not in ("size", "batch")}, "load_s": res["load_s"],
                    "rss_loaded_mb": res["rss_loaded_mb"], "isolation": args.memory_isolation}
            if "error" in res:
                log.warning("memory worker for %s failed: %s", name, res["error"])
                for hh, ww, b in cases:
                    memory[(name, (hh, ww), b)] = {"error": res["error"]}

    sg2 = common.sgemm_peak(args.sgemm_n, threads=args.threads)
    sgemm = max(sg1, sg2, key=lambda s: s["peak_gflops"])
    sgemm["runs_gflops"] = [sg1["peak_gflops"], sg2["peak_gflops"]]
    report["sgemm"] = sgemm
    report["rows"], report["ratios"] = build_rows(timings, memory, flops, sgemm["peak_gflops"])
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
    tr = next((i for i in engines_info if i["name"] == "triton"), None)
    if tr and tr["available"]:
        report["triton"] = triton_rows(args.triton_url, sizes, n=args.min_iters,
                                       concurrency=args.triton_concurrency)
    else:
        report["triton"] = {"available": False, "rows": [],
                            "reason": tr["reason"] if tr else "not requested (--engines)"}

    report["method"] = {
        "timing": "each case: warm-up call(s) per engine, then rounds of one call per engine on the same "
                  "input in a rotated order (interleaved, so drift and load from other processes hit all "
                  "engines alike); end-to-end engine(image, mask) incl. padding/compositing; "
                  f"{args.min_iters}..{args.max_iters} rounds, {args.budget_s:.0f} s budget per case",
        "ratios": "median over rounds of the per-round latency ratio (paired), with quartiles",
        "memory": {"case": "fresh subprocess per engine/size/batch: build the engine, run one call, "
                           "read VmHWM (peak RSS); +RSS = peak minus RSS after loading the engine",
                   "engine": "one subprocess per engine, cases in ascending size; VmHWM reset "
                             "(/proc/self/clear_refs) before each case; allocator caches may carry over",
                   "none": "not measured"}[args.memory_isolation],
        "flops": "torch.utils.flop_counter.FlopCounterMode on the meta device: convolutions and matmuls "
                 "(2 FLOPs per multiply-add); GFLOP/s uses the conv FLOPs (identical work for every engine); "
                 "the matmul-DFT FLOPs are extra work of that backend (torch.fft is not counted)",
        "sgemm_peak": "best of 5 runs of a float32 n x n x n matmul in torch and numpy, at the start and "
                      "end of the run; the highest is the peak",
        "inputs": "uniform noise image, centred rectangular hole of 25% of the area (speed does not depend "
                  "on pixel values)",
    }
    report["wall_s"] = time.perf_counter() - wall0
    report["summary"] = summarize(report)

    _write_text(out / "benchmark.json", json.dumps(report, indent=2, default=str))
    _write_text(out / "benchmark.md", to_markdown(report))
    pngs = plot(report, out)
    log.info("wrote %s, %s, %s in %.0f s", out / "benchmark.json", out / "benchmark.md", ", ".join(pngs),
             time.perf_counter() - wall0)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
