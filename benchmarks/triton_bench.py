"""Throughput and latency through Triton against in-process onnxruntime, same model, same inputs.

``measure_triton(url, sizes, n, concurrency)`` sends ``n`` requests per size from ``concurrency``
client threads (one TritonEngine each, so the server's dynamic batcher sees concurrent requests)
and runs the same ``n`` calls in-process on onnxruntime with the same number of threads sharing one
session. Each side: infer/s = n / wall time, p50/p99 of per-request latency; ratios are
Triton / in-process. Before timing, one output from each side is compared (``same_model``) so a
server running another model cannot pass as a comparison.

``python -m benchmarks.triton_bench [--url HOST:PORT] [--onnx model.onnx]``: without --url it builds
a CPU-flavour repository from the ONNX file in a temp dir, starts tritonserver (server
environment: ``python -m glama_deploy.triton setup-env``), measures, and stops it. Without --onnx
the bundled default weights are exported first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from glama_deploy.bundled import DEFAULT_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("benchmarks.triton_bench")


def _hw(size) -> tuple[int, int]:
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def make_inputs(h: int, w: int, hole: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random image and a centred rectangular hole covering ``hole`` of it."""
    rng = np.random.default_rng(seed)
    image = rng.random((1, 3, h, w), dtype=np.float32)
    mask = np.zeros((1, 1, h, w), np.float32)
    mh, mw = int(h * hole ** 0.5), int(w * hole ** 0.5)
    mask[:, :, (h - mh) // 2:(h + mh) // 2, (w - mw) // 2:(w + mw) // 2] = 1
    return image, mask


def _timed(calls: list, n: int, concurrency: int) -> tuple[float, list[float]]:
    """Run ``n`` calls spread over ``len(calls)`` threads (``calls[i]`` is thread i's function)."""
    concurrency = min(concurrency, max(1, n))
    calls = calls[:concurrency]
    per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[BaseException] = []
    start = threading.Barrier(concurrency + 1)

    def work(i: int) -> None:
        try:
            start.wait()
            for _ in range(per[i]):
                t0 = time.perf_counter()
                calls[i]()
                lat[i].append(time.perf_counter() - t0)
        except BaseException as e:  # reported after join
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall, [x for xs in lat for x in xs]


def _stats(prefix: str, wall: float, lat: list[float]) -> dict:
    p50, p99 = np.percentile(np.asarray(lat) * 1e3, [50, 99])
    return {f"{prefix}_ips": len(lat) / wall, f"{prefix}_p50_ms": float(p50), f"{prefix}_p99_ms": float(p99)}


def measure_triton(url: str, sizes, n: int = 30, concurrency: int = 4, *, protocol: str = "http",
                   model_name: str = "glama_onnx_py", onnx: str | os.PathLike | None = None,
                   threads: int | None = None, warmup: int = 2, hole: float = 0.25, rounds: int = 4) -> list[dict]:
    """One row per size (int or (H, W)): Triton and in-process onnxruntime infer/s, p50/p99 and ratios.

    ``onnx``: the model the server runs (default: $GLAMA_TRITON_ONNX, else the bundled default
    weights exported to a temp file). ``threads``: onnxruntime intra-op threads in-process
    (default: all cores; match the server's per-instance setting for a like-for-like run).
    ``rounds``: the n requests are split into rounds that alternate between the two sides.
    """
    from glama_deploy.engines import create_engine
    from glama_deploy.engines.onnx_ import OnnxEngine

    concurrency = max(1, int(concurrency))
    with tempfile.TemporaryDirectory(prefix="glama-triton-bench-") as tmp:
        onnx = onnx or os.environ.get("GLAMA_TRITON_ONNX") or export_default_onnx(Path(tmp) / "tiny.onnx")
        local = OnnxEngine(onnx, threads=threads)
        clients = [create_engine("triton", url=url, protocol=protocol, model_name=model_name)
                   for _ in range(concurrency)]
        rows = []
        try:
            for size in sizes:
                h, w = _hw(size)
                image, mask = make_inputs(h, w, hole)
                ref, got = local(image, mask), clients[0](image, mask)
                same = bool(np.abs(ref - got).max() <= 1e-3)
                if not same:
                    log.warning("%dx%d: the server's %s differs from %s (max %.3g): ratios compare different models",
                                h, w, model_name, onnx, float(np.abs(ref - got).max()))
                for c in clients:  # warm every connection and the server's instances
                    for _ in range(warmup):
                        c(image, mask)
                for _ in range(warmup):
                    local(image, mask)
                rounds = max(1, min(rounds, n))
                row = {"size": f"{h}x{w}", "n": n, "concurrency": concurrency, "protocol": protocol,
                       "model": model_name, "same_model": same}
                # alternate the two sides in rounds so a change in machine load hits both alike
                sides = {"triton": [lambda c=c, x=image, m=mask: c(x, m) for c in clients],
                         "local": [lambda x=image, m=mask: local(x, m)] * concurrency}
                acc = {k: [0.0, []] for k in sides}
                for r in range(rounds):
                    share = n // rounds + (1 if r < n % rounds else 0)
                    for name, calls in sides.items():
                        wall, lat = _timed(calls, share, concurrency)
                        acc[name][0] += wall
                        acc[name][1] += lat
                for name, (wall, lat) in acc.items():
                    row.update(_stats(name, wall, lat))
                row["ips_ratio"] = row["triton_ips"] / row["local_ips"]
                row["p50_ratio"] = row["triton_p50_ms"] / row["local_p50_ms"]
                row["p99_ratio"] = row["triton_p99_ms"] / row["local_p99_ms"]
                rows.append(row)
                log.info("%s", row)
        finally:
            for c in clients:
                c.close()
    return rows


def export_default_onnx(path: Path) -> str:
    """The bundled default weights as ONNX (what `build-repo --onnx` would serve)."""
    from export.onnx import export_onnx
    from glama_deploy.model.weights import load_generator

    model, _ = load_generator(DEFAULT_WEIGHTS)
    export_onnx(model, path, parity_sizes=())
    return str(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.triton_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="running server (default: start one on a temp CPU repository)")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http")
    ap.add_argument("--model-name", default="glama_onnx_py")
    ap.add_argument("--onnx", help="the model the server runs (default: the bundled model, exported)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--n", type=int, default=40, help="requests per size and side")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime threads: in-process and per server instance")
    ap.add_argument("--instances", type=int, default=1, help="generator instances of the started server")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="glama-triton-bench-") as tmp:
        onnx = args.onnx or export_default_onnx(Path(tmp) / "tiny.onnx")
        server = None
        url = args.url
        if url is None:
            from glama_deploy.triton.repo import RepoOptions, build_repo
            from glama_deploy.triton.server import TritonServer

            repo = Path(tmp) / "repo"
            build_repo(repo, RepoOptions(flavour="cpu", threads=args.threads, generator_instances=args.instances,
                                         max_batch_size=max(1, args.concurrency)), onnx=onnx)
            server = TritonServer(repo).start()
            url = server.http_url if args.protocol == "http" else server.grpc_url
        try:
            rows = measure_triton(url, args.sizes, args.n, args.concurrency, protocol=args.protocol,
                                  model_name=args.model_name, onnx=onnx, threads=args.threads)
        finally:
            if server is not None:
                server.stop()
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
