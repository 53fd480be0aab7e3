"""benchmarks/run.py --quick: the report's structure (JSON, Markdown, PNG), not its timings."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import latency_stats, make_inputs, paired_ratio

from .conftest import SAMPLES

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
LOCAL = ("torch-fft", "torch-matmul", "ort-matmul", "ort-dft", "ort-int8", "torch-bf16")
LOW = ("ort-int8", "torch-bf16")  # int8 QDQ / bf16 autocast: close to, not equal to, torch-fft


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory, request) -> tuple[Path, dict, float]:
    """One --quick run for the module. ONNX exports are cached in pytest's cache directory, so
    only the first run on a machine pays for them."""
    import time

    out = tmp_path_factory.mktemp("bench")
    cache_plugin = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    cache = cache_plugin.mkdir("glama-benchmarks") if cache_plugin else out / "cache"
    t = time.perf_counter()
    # int8 calibrates on the bundled sample photos: a clean clone has no training photos beside it
    calib = tmp_path_factory.mktemp("calib")
    for p in sorted(SAMPLES.glob("*.jpg")):
        shutil.copy(p, calib / p.name)
    proc = subprocess.run([sys.executable, str(RUN), "--quick", "--out", str(out), "--cache-dir", str(cache),
                           "--calib-photos", str(calib)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads((out / "benchmark.json").read_text()), time.perf_counter() - t


@pytest.mark.slow
def test_quick_json_has_every_engine_size_and_batch(quick_report):
    _, rep, _ = quick_report
    assert rep["schema"] == "glama-deploy/benchmark/v1" and rep["quick"] is True and rep["config"] == "tiny"
    for k in ("cpu_model", "logical_cores", "memory_total_mib", "load_average"):
        assert k in rep["machine"]
    for k in ("python", "torch", "onnxruntime", "numpy"):
        assert rep["versions"][k]
    assert rep["git_revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", rep["git_revision"])
    assert rep["sgemm"]["peak_gflops"] > 0
    engines = {e["name"]: e for e in rep["engines"]}
    assert set(engines) == set(LOCAL) | {"tensorrt", "triton"}
    for e in engines.values():  # every engine is either measured or says why not
        assert e["available"] or e["reason"]
    rows = {(r["engine"], r["size"][0], r["batch"]): r for r in rep["rows"]}
    assert set(rows) == {(e, s, b) for e in LOCAL for s in (128, 256) for b in (1, 2)}
    for r in rows.values():
        lat = r["latency"]
        assert lat["n"] == len(r["samples_ms"]) >= 3
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] * 1e3 / lat["p50_ms"])
        assert r["memory"]["peak_rss_mib"] > r["memory"]["rss_loaded_mib"] > 0
        assert 0 < r["peak_fraction_p50"] and r["gflops_p50"] > 0
        # all engines run the same network on the same input: same output as torch.fft eager
        assert r["max_abs_diff_vs_torch_fft"] < (0.25 if r["engine"] in LOW else 1e-4), r
    assert {x["key"] for x in rep["ratios"]} >= {"ort-matmul/torch-fft", "ort-matmul/ort-dft"}
    assert {"ort-int8/ort-matmul", "ort-int8/torch-fft", "torch-bf16/torch-fft"} <= {x["key"] for x in rep["ratios"]}
    assert {"ort-matmul/torch-fft", "ort-matmul/ort-dft", "best_peak_fraction"} <= set(rep["summary"])
    # what a user sizes a deployment by: parameters and file sizes of the model measured
    from glama_deploy.model import Generator, get_config

    m = rep["model"]
    assert m["parameters"] == sum(p.numel() for p in Generator(get_config(rep["config"])).parameters())
    assert 0.9 * m["parameters"] * 4 / 1e6 < m["weights_mb"] < 1.2 * m["parameters"] * 4 / 1e6
    assert set(m["onnx_mb"]) == {"ort-matmul", "ort-dft", "ort-int8"}
    assert all(v > 0.9 * m["weights_mb"] for k, v in m["onnx_mb"].items() if k != "ort-int8")
    assert m["onnx_mb"]["ort-int8"] < 0.6 * m["onnx_mb"]["ort-matmul"]  # int8 weights (spectral ones float)


@pytest.mark.slow
def test_quick_flops_are_counted_not_guessed(quick_report):
    _, rep, _ = quick_report
    f128, f256 = rep["flops"]["128"], rep["flops"]["256"]
    # convolutions scale with the pixel count, except the spectral 1x1 convs on the half spectrum
    # (W/2+1 columns: 65 at 128, 129 at 256), so slightly under 4x; DFT matmuls grow as HW(H+W)
    assert 0.99 * 4 * f128["fft"]["total"] < f256["fft"]["total"] < 4 * f128["fft"]["total"]
    assert set(f128["fft"]["by_op"]) == {"convolution"}
    extra128 = f128["matmul"]["total"] - f128["fft"]["total"]
    extra256 = f256["matmul"]["total"] - f256["fft"]["total"]
    assert extra128 > 0 and extra256 > 4 * extra128


@pytest.mark.slow
def test_quick_markdown_and_plots(quick_report):
    out, rep, seconds = quick_report
    md = (out / "benchmark.md").read_text()
    for section in ("## Summary", "## Latency, throughput, memory", "## Paired latency ratios",
                    "## Low precision", "## Engines not measured", "## High resolution", "## Triton",
                    "## FLOPs per image", "## Method"):
        assert section in md
    table = [line for line in md.splitlines() if re.match(r"\| (torch|ort)-\w+ \| \d+ \| \d \|", line)]
    assert len(table) == len(rep["rows"])
    if not next(e for e in rep["engines"] if e["name"] == "tensorrt")["available"]:
        assert re.search(r"- tensorrt: \S+", md)
    for name in ("latency.png", "highres.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 800 and height >= 300 and len(data) > 10_000
    assert rep["highres"]["rows"] or rep["highres"]["reason"]
    assert rep["triton"]["rows"] or rep["triton"]["reason"]
    assert seconds < 600  # budget is ~2 min with cached exports; this only catches a hang


def test_bad_arguments_exit_2_with_one_line():
    proc = subprocess.run([sys.executable, str(RUN), "--sizes", "big"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: bad size 'big': use N or WxH"]


def test_stats_and_paired_ratios():
    s = latency_stats([0.1, 0.2, 0.3, 0.4, 0.5], batch=2)
    assert s["p50_ms"] == pytest.approx(300) and s["min_ms"] == pytest.approx(100)
    assert s["images_per_s"] == pytest.approx(2 / 0.3)
    # machine slows down 4x during the run: each pair still says "a is twice as fast as b"
    drift = np.array([1, 1, 4, 4, 4])
    r = paired_ratio(list(0.5 * drift), list(1.0 * drift))
    assert r["ratio"] == pytest.approx(0.5) and r["pairs"] == 5
    image, mask = make_inputs(64, 96, batch=2, hole_fraction=0.25)
    assert image.shape == (2, 3, 64, 96) and mask.shape == (2, 1, 64, 96)
    assert mask.mean() == pytest.approx(0.25, abs=0.02)
