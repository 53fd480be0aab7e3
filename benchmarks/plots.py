"""The report's figures: latency.png (latency, throughput, share of peak) and highres.png."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from benchmarks.engines import ALL_ENGINES


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
