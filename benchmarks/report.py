"""The report: rows and paired ratios from the timings, the summary, and the Markdown text."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks import common
from benchmarks.cases import size_label
from benchmarks.engines import DESCRIPTIONS, LOW_PRECISION

# paired ratios reported (a/b: < 1 = a faster), and the ones the summary leads with
PAIRS = (("ort-matmul", "torch-fft"), ("ort-matmul", "ort-dft"), ("torch-matmul", "torch-fft"),
         ("ort-dft", "torch-fft"), ("ort-int8", "ort-matmul"), ("ort-int8", "torch-fft"), ("torch-bf16", "torch-fft"),
         ("torch-bf16", "ort-matmul"), ("ort-int8-asym", "ort-matmul"), ("ort-int8-asym", "torch-fft"))
SUMMARY_LABELS = {"ort-matmul/torch-fft": "onnxruntime (matmul DFT) vs torch eager (fft)",
                  "ort-matmul/ort-dft": "onnxruntime: matmul-DFT graph vs native DFT graph",
                  "torch-matmul/torch-fft": "torch eager: matmul DFT vs torch.fft",
                  "ort-int8/ort-matmul": "onnxruntime int8 (QDQ) vs the fp32 graph",
                  "ort-int8/torch-fft": "onnxruntime int8 (QDQ) vs torch eager (fft)",
                  "torch-bf16/torch-fft": "torch eager bf16 autocast vs fp32",
                  "ort-int8-asym/ort-matmul": "onnxruntime int8, asymmetric uint8 activations (CPU-only) vs fp32",
                  "ort-int8-asym/torch-fft": "onnxruntime int8, asymmetric (CPU-only) vs torch eager (fft)"}
PRECISION = {"ort-int8": "int8", "ort-int8-asym": "int8 (asym. u8 act.)", "torch-bf16": "bf16"}


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
        for key in SUMMARY_LABELS:
            r = pick(key, at) or next((x for x in ratios if x["key"] == key and x["batch"] == 1), None)
            if r:
                out[key] = {"size": r["size"], "latency_ratio": r["ratio"], "speedup": 1 / r["ratio"],
                            "q1": r["q1"], "q3": r["q3"], "pairs": r["pairs"]}
    if rows:
        fp32 = [r for r in rows if r["engine"] not in LOW_PRECISION] or rows  # sgemm peak: a float32 yardstick
        best = max(fp32, key=lambda r: r.get("peak_fraction_p50") or 0)
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
                executed = flops[hw]["matmul" if "matmul" in name or name.startswith("ort-int8") else "fft"]["total"]
                row["flops_per_image"] = model_flops
                row["executed_flops_per_image"] = executed
                row["precision"] = PRECISION.get(name, "fp32")
                row["gflops_p50"] = model_flops * batch / (lat["p50_ms"] / 1e3) / 1e9
                row["gflops_best"] = model_flops * batch / (lat["min_ms"] / 1e3) / 1e9
                row["peak_fraction_p50"] = row["gflops_p50"] / peak_gflops
                row["peak_fraction_best"] = row["gflops_best"] / peak_gflops
            for k in ("error", "max_abs_diff_vs_torch_fft", "memory", "load_s"):
                if k in t:
                    row[k] = t[k]
            rows.append(row)
        for a, b in PAIRS:
            if per_engine.get(a, {}).get("samples") and per_engine.get(b, {}).get("samples"):
                r = common.paired_ratio(per_engine[a]["samples"], per_engine[b]["samples"])
                ratios.append({"key": f"{a}/{b}", "size": list(hw), "batch": batch, **r})
    return rows, ratios


def low_precision_lines(report: dict) -> list[str]:
    """Markdown: int8/bf16 rows next to the fp32 ones (batch 1), speed ratios and memory per precision."""
    rows = [r for r in report["rows"] if "latency" in r and r["batch"] == 1]
    if not any(r["engine"] in LOW_PRECISION for r in rows):
        return []
    ratio = {(x["key"], tuple(x["size"])): x for x in report["ratios"] if x["batch"] == 1}
    files = {**report.get("model", {}).get("onnx_mb", {})}
    wmb = report.get("model", {}).get("weights_mb")
    L = ["## Low precision (batch 1)", "",
         "| engine | precision | size | p50 ms | speed vs ort-matmul (quartiles) | speed vs torch-fft (quartiles) | "
         "peak RSS MiB | +RSS MiB | model file MB | max diff vs torch |", "|---|---|---|---|---|---|---|---|---|---|"]

    def speed(a: str, b: str, size) -> str:
        x = ratio.get((f"{a}/{b}", size)) or ratio.get((f"{b}/{a}", size))
        if a == b:
            return "1"
        if x is None:
            return "-"
        inv = x["key"].startswith(a + "/")
        return (f"{1 / x['ratio']:.2f}x ({1 / x['q3']:.2f}-{1 / x['q1']:.2f})" if inv
                else f"{x['ratio']:.2f}x ({x['q1']:.2f}-{x['q3']:.2f})")

    for r in sorted(rows, key=lambda r: (r["size"][0] * r["size"][1], r["engine"])):
        if r["engine"] not in ("ort-matmul", "torch-fft") + LOW_PRECISION:
            continue
        size, mem = tuple(r["size"]), r.get("memory", {})
        mb = files.get(r["engine"], wmb if r["engine"].startswith("torch") else None)
        L.append(f"| {r['engine']} | {PRECISION.get(r['engine'], 'fp32')} | {size_label(r['size'])} | "
                 f"{r['latency']['p50_ms']:.0f} | {speed(r['engine'], 'ort-matmul', size)} | "
                 f"{speed(r['engine'], 'torch-fft', size)} | {_fmt(mem.get('peak_rss_mib'))} | "
                 f"{_fmt(mem.get('added_rss_mib'))} | {_fmt(mb, '.1f')} | "
                 f"{_fmt(r.get('max_abs_diff_vs_torch_fft'), '.1e')} |")
    L += ["", "Speed = latency of the reference / latency of the engine, median of interleaved pairs. Quality of "
          "int8/bf16 (in-hole PSNR vs fp32 and vs the photo, per mask type): benchmarks/results/"
          "precision_quality.md.", ""]
    return L


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
        for key, label in SUMMARY_LABELS.items():
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
    L += low_precision_lines(report)
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


def write_text(path: Path, text: str) -> None:
    """Write atomically (a reader never sees half a report)."""
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def method(args) -> dict:
    """How each number was measured (the report's Method section), from the run's arguments."""
    return {
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
