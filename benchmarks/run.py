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
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
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
    prepare_tensorrt,
    prepare_weights,
    tensorrt_status,
    triton_status,
)
from benchmarks.worker import WorkerDied, start_workers  # noqa: E402
from glama_deploy.bundled import SAMPLES  # noqa: E402

log = logging.getLogger("benchmarks")
SCHEMA = "glama-deploy/benchmark/v1"
REFERENCE_ENGINE = "torch-fft"
HIGHRES_DEFAULT = "2560x1600,7680x4320"
QUICK = {"config": "tiny", "threads": 1, "warmup": 1, "sizes": "128,256", "batches": "1,2", "min_iters": 3,
         "max_iters": 20, "budget_s": 1.5, "triton_n": 4, "highres_sizes": "640x400", "sgemm_n": 1024,
         "isolation": "engine"}


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


def build_rows(timings: dict, flops: dict, peak_gflops: float) -> tuple[list, list]:
    """Merge timing, memory and FLOPs into one row per engine/size/batch, plus paired ratios."""
    rows, ratios = [], []
    for (hw, batch), per_engine in timings.items():
        model_flops = flops[hw]["fft"]["total"]
        for name, t in per_engine.items():
            row = {"engine": name, "description": DESCRIPTIONS[name], "size": list(hw), "batch": batch}
            if t.get("samples"):
                lat = common.latency_stats(t["samples"], batch)
                row["latency"] = lat
                row["samples_ms"] = [round(1e3 * x, 3) for x in t["samples"]]  # in round order
                row["images_per_s"] = lat["images_per_s"]
                executed = flops[hw]["matmul" if "matmul" in name else "fft"]["total"]
                row["flops_per_image"] = model_flops
                row["executed_flops_per_image"] = executed
                row["gflops_p50"] = model_flops * batch / (lat["p50_ms"] / 1e3) / 1e9
                row["gflops_best"] = model_flops * batch / (lat["min_ms"] / 1e3) / 1e9
                row["peak_fraction_p50"] = row["gflops_p50"] / peak_gflops
                row["peak_fraction_best"] = row["gflops_best"] / peak_gflops
            for k in ("error", "max_abs_diff_vs_torch_fft", "memory", "load_s"):
                if k in t:
                    row[k] = t[k]
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
         f"{_fmt(m['memory_total_mib'])} MiB RAM, load average {m['load_average'][0]:.1f} at start, "
         f"{report.get('load_average_end', [float('nan')])[0]:.1f} at end; "
         f"GPUs: {', '.join(g['name'] for g in m['gpus']) or 'none'}",
         f"- versions: python {v['python']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, "
         f"numpy {v['numpy']}; git {report['git_revision']}",
         f"- threads per engine: {report['threads']}; device: {report['device']}",
         *([f"- model: {report['model']['parameters']:,} parameters, weights {report['model']['weights_mb']:.1f} MB"
            + "".join(f", {n} ONNX {mb:.1f} MB" for n, mb in report["model"]["onnx_mb"].items())]
           if "model" in report else []),
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
        if summ.get("fastest"):
            L.append("- fastest engine (p50) per size/batch: " + "; ".join(
                f"{k}: {v['engine']} ({v['p50_ms']:.0f} ms)" for k, v in summ["fastest"].items()))
        L.append("")
    L += ["## Latency, throughput, memory", "",
          "| engine | size | batch | p50 ms | p90 ms | p99 ms | n | img/s | peak RSS MiB | +RSS MiB "
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
                 f"{_fmt(mem.get('peak_rss_mib'))} | {_fmt(mem.get('added_rss_mib'))} | "
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
        L += ["| size | mode | seconds | speedup vs full | peak RSS MiB (run) | peak RSS MiB (process) | tiles | "
              "note |", "|---|---|---|---|---|---|---|---|"]
        for r in hr["rows"]:
            if not r.get("ok"):
                L.append(f"| {r.get('size')} | {r.get('mode')} | - | - | - | - | - | {r.get('error', '')} |")
                continue
            L.append(f"| {r.get('size')} | {r.get('mode')} | {_fmt(r.get('seconds'), '.2f')} | "
                     f"{_fmt(r.get('speedup_vs_full'), '.2f')} | {_fmt(r.get('run_peak_rss_mib'))} | "
                     f"{_fmt(r.get('peak_rss_mib'))} | {r.get('plan_tiles', '-')} | hole "
                     f"{100 * r.get('hole_fraction', 0):.1f}% |")
        L += ["", f"engine: {hr.get('engine')}, photo {hr.get('image')} resized to each size; run peak = "
              "high-water mark while inpainting (reset after loading engine, image and mask); process "
              "peak includes engine start-up. Each case in a fresh process (benchmarks.highres)."]
    else:
        L.append(f"not measured: {hr.get('reason', 'skipped')}")
    L.append("")
    tr = report["triton"]
    L += ["## Triton vs in-process onnxruntime", ""]
    if tr.get("rows"):
        L += ["| size | requests | concurrency | Triton img/s | local img/s | Triton p50 ms | local p50 ms | "
              "Triton p99 ms | local p99 ms | same model |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in tr["rows"]:
            L.append(f"| {r.get('size')} | {r.get('n')} | {r.get('concurrency')} | "
                     f"{_fmt(r.get('triton_ips'), '.2f')} | {_fmt(r.get('local_ips'), '.2f')} | "
                     f"{_fmt(r.get('triton_p50_ms'))} | "
                     f"{_fmt(r.get('local_p50_ms'))} | {_fmt(r.get('triton_p99_ms'))} | "
                     f"{_fmt(r.get('local_p99_ms'))} | {r.get('same_model')} |")
        L += ["", f"server: {tr.get('url')} ({'started for this run' if tr.get('started_server') else 'given'}), "
              f"model glama_onnx_py (python backend running onnxruntime on the same matmul export), "
              f"{tr.get('threads')} onnxruntime thread(s) on both sides"]
    else:
        L.append(f"not measured: {tr.get('reason', 'skipped')}")
    L += ["", "## FLOPs per image (counted)", "",
          "| size | conv GFLOP (all engines) | + matmul-DFT GFLOP | DFT share |", "|---|---|---|---|"]
    for key, f in report["flops"].items():
        conv, mm = f["fft"]["total"], f["matmul"]["total"]
        L.append(f"| {key} | {conv / 1e9:.2f} | {(mm - conv) / 1e9:.2f} | {100 * (mm - conv) / mm:.1f}% |")
    L += ["", "## Method", ""] + [f"- {k}: {t}" for k, t in report["method"].items()] + [""]
    return "\n".join(L)


def _size_axis(ax, ticks: list[int]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def plot(report: dict, out: Path) -> list[str]:
    """latency.png (latency, throughput, share of peak vs size) and highres.png (memory, time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = [r for r in report["rows"] if "latency" in r and r["size"][0] == r["size"][1]]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    engines = [e for e in ALL_ENGINES if any(r["engine"] == e for r in rows)]
    colors = {e: f"C{i}" for i, e in enumerate(ALL_ENGINES)}
    batches = sorted({r["batch"] for r in rows})
    styles = ["-", "--", ":", "-."]
    for name in engines:
        for i, b in enumerate(batches):
            rb = sorted((r for r in rows if r["engine"] == name and r["batch"] == b), key=lambda r: r["size"][0])
            if not rb:
                continue
            x = [r["size"][0] for r in rb]
            kw = {"marker": "os^D"[i % 4], "color": colors[name], "linestyle": styles[i % 4],
                  "label": f"{name} b{b}", "fillstyle": "full" if i == 0 else "none"}
            if b == 1:
                p50 = [r["latency"]["p50_ms"] for r in rb]
                lo = [p - r["latency"]["min_ms"] for p, r in zip(p50, rb, strict=True)]
                hi = [r["latency"]["p90_ms"] - p for p, r in zip(p50, rb, strict=True)]
                axes[0].errorbar(x, p50, yerr=[lo, hi], capsize=3, **{**kw, "label": name})
            axes[1].plot(x, [r["images_per_s"] for r in rb], **kw)
            axes[2].plot(x, [100 * r["peak_fraction_p50"] for r in rb], **kw)
    ticks = sorted({r["size"][0] for r in rows})
    axes[0].set(yscale="log", xlabel="image side (px, square)", ylabel="latency p50 (ms)",
                title="Latency, batch 1 (bars: min..p90)")
    axes[1].set(yscale="log", xlabel="image side (px, square)", ylabel="images / s", title="Throughput at p50")
    axes[2].set(xlabel="image side (px, square)", ylabel="% of sgemm peak",
                title=f"Share of the {report['sgemm']['peak_gflops']:.0f} GFLOP/s sgemm peak (p50)")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        _size_axis(ax, ticks)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{report['config']} on {report['machine']['cpu_model']}, {report['threads']} thread(s) per engine")
    fig.tight_layout()
    written.append(_save_fig(fig, out / "latency.png"))
    plt.close(fig)

    hr = report["highres"]
    hrows = [r for r in hr.get("rows") or [] if r.get("ok")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    if hrows:
        sizes = list(dict.fromkeys(str(r.get("size")) for r in hr["rows"]))
        modes = list(dict.fromkeys(str(r.get("mode")) for r in hr["rows"]))
        width = 0.8 / max(1, len(modes))
        for ax, keys, unit in ((axes[0], ("run_peak_rss_mib", "peak_rss_mib"), "peak RSS while inpainting (MiB)"),
                               (axes[1], ("seconds",), "time (s)")):
            for j, mode in enumerate(modes):
                vals = []
                for size in sizes:
                    r = next((r for r in hrows if str(r.get("size")) == size and str(r.get("mode")) == mode), {})
                    v = next((r[k] for k in keys if isinstance(r.get(k), (int, float))), np.nan)
                    vals.append(v)
                xs = np.arange(len(sizes)) + j * width
                bars = ax.bar(xs, vals, width, label=mode)
                ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.0f}" if v >= 10 else f"{v:.2f}"
                                           for v in vals], fontsize=7)
                for x, v in zip(xs, vals, strict=True):
                    if np.isnan(v):
                        ax.annotate("not run", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                                    textcoords="offset points", ha="center", fontsize=7, rotation=90)
            ax.set_xticks(np.arange(len(sizes)) + width * (len(modes) - 1) / 2, sizes)
            ax.set(ylabel=unit, yscale="log")
            ax.legend(fontsize=8)
            ax.grid(True, axis="y", alpha=0.3)
        axes[0].set_title("Peak memory: full frame vs tiled vs two-stage")
        axes[1].set_title("Time per image")
    else:
        for ax in axes:
            ax.axis("off")
        axes[0].text(0, 0.5, f"high-res rows not measured:\n{hr.get('reason', 'no successful case')}", wrap=True)
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
    ap.add_argument("--config", default="lama-fourier",
                    help="generator config for seeded random weights (tiny, small, lama-fourier, big-lama); "
                         "ignored with --weights")
    ap.add_argument("--weights", help="weights file (.safetensors); default: seeded random weights")
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
        weights, model_id = prepare_weights(args.config, args.weights, cache, args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["weights"] = str(weights)
    infos = {name: {"name": name, "description": DESCRIPTIONS[name], "available": True, "reason": ""}
             for name in wanted}
    specs: dict[str, dict] = {}
    jobs = {}
    for name in wanted:
        if name.startswith("torch"):
            specs[name] = {"name": name, "kind": "torch", "weights": str(weights),
                           "spectral_backend": name.split("-")[1]}
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

    report["method"] = {
        "timing": "each case: every engine runs in its own process; its first call on the case measures "
                  f"memory and counts as warm-up ({args.warmup} untimed call(s) in all), then rounds of one "
                  "call per engine on the same input in a rotated order, one engine at a time (interleaved, "
                  "so drift and load from other processes hit all engines alike); the time is "
                  "engine(image, mask) end to end, incl. padding and "
                  f"compositing, measured inside the worker; {args.min_iters}..{args.max_iters} rounds, "
                  f"{args.budget_s:.0f} s budget per case"
                  + (f", at least 2 rounds when a case passes {args.max_case_s:.0f} s" if args.max_case_s else ""),
        "ratios": "median over rounds of the per-round latency ratio (paired), with quartiles",
        "memory": {"case": "fresh worker processes for every size/batch: peak RSS (VmHWM) of the first call, "
                           "reset just before it; +RSS = peak minus RSS after loading the engine",
                   "engine": "one worker process per engine for all cases (ascending size); VmHWM reset "
                             "before each case's first call; allocator/arena caches may carry over from "
                             "smaller cases"}[args.isolation],
        "flops": "torch.utils.flop_counter.FlopCounterMode on the meta device: convolutions and matmuls "
                 "(2 FLOPs per multiply-add). GFLOP/s uses the conv FLOPs, identical work for every engine; "
                 "the matmul-DFT FLOPs are extra work of that backend; torch.fft, BatchNorm and elementwise "
                 "ops are not counted",
        "sgemm_peak": f"best of 5 runs of a float32 {args.sgemm_n}^3 matmul in torch and numpy with "
                      f"{args.threads} thread(s) (fresh process, BLAS thread variables set), at the start and "
                      "at the end of the run; the higher is the peak",
        "gpu_memory": "with CUDA, torch.cuda.max_memory_allocated for the torch engines (onnxruntime and "
                      "TensorRT allocate outside torch and are not tracked)",
        "inputs": "uniform noise image, centred rectangular hole of 25% of the area (speed does not depend "
                  "on pixel values)",
    }
    report["load_average_end"] = list(os.getloadavg())
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
