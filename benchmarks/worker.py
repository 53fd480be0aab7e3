"""One engine per process, driven over a pipe: the parent interleaves calls across engines.

Why processes: two thread pools in one process (torch's OpenMP and onnxruntime's) spin and
starve each other, and allocator caches of one engine would inflate another's memory. A worker
holds one engine; the parent asks it to prepare a case (the first call doubles as the memory
measurement: VmHWM is reset just before it) and then to time single calls, one engine at a time.
"""

from __future__ import annotations

import multiprocessing as mp
import time

from benchmarks import common


def serve(conn, spec: dict, threads: int | None, device: str) -> None:
    """Worker main loop. Messages: ("case", h, w, batch, seed, warmup), ("time",), ("stop",)."""
    try:
        if spec["kind"] == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
        from benchmarks.engines import build_engine

        t = time.perf_counter()
        engine = build_engine(spec, threads=threads, device=device)
        load_s = time.perf_counter() - t
        load_peak = common.peak_rss_mb()
        common.release_memory()
        rss_loaded = common.rss_mb()
        conn.send({"ready": True, "load_s": load_s, "rss_loaded_mib": rss_loaded, "load_peak_rss_mib": load_peak})
    except Exception as e:  # noqa: BLE001 - reported to the parent, which marks the engine unavailable
        conn.send({"error": f"{type(e).__name__}: {e}"})
        return
    cuda = device.startswith("cuda")
    image = mask = None
    while True:
        msg = conn.recv()
        try:
            if msg[0] == "stop":
                break
            if msg[0] == "case":
                _, h, w, batch, seed, warmup = msg
                image = mask = None
                common.release_memory()
                image, mask = common.make_inputs(h, w, batch, seed=seed)
                reset = common.reset_peak_rss()
                if cuda:
                    import torch

                    torch.cuda.reset_peak_memory_stats()
                before = common.rss_mb()
                t = time.perf_counter()
                y = engine(image, mask)
                first = time.perf_counter() - t
                peak = common.peak_rss_mb()
                out = {"first_call_s": first, "rss_before_mib": before, "peak_rss_mib": peak,
                       "added_rss_mib": peak - rss_loaded, "hwm_reset": reset, "rss_loaded_mib": rss_loaded,
                       "load_peak_rss_mib": load_peak, "inputs_mib": (image.nbytes + mask.nbytes) / common.MB}
                if cuda:
                    import torch

                    out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / common.MB
                for _ in range(max(0, warmup - 1)):
                    y = engine(image, mask)
                out["output"] = y[:1].copy()
                conn.send(out)
            elif msg[0] == "time":
                t = time.perf_counter()
                engine(image, mask)
                conn.send({"s": time.perf_counter() - t})
            else:
                conn.send({"error": f"unknown message {msg[0]!r}"})
        except Exception as e:  # noqa: BLE001
            conn.send({"error": f"{type(e).__name__}: {e}"})
    if hasattr(engine, "close"):
        engine.close()


class WorkerDied(RuntimeError):
    pass


class EngineWorker:
    """Parent-side handle of one worker process."""

    def __init__(self, spec: dict, threads: int | None, device: str = "cpu"):
        ctx = mp.get_context("spawn")
        self.name = spec["name"]
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=serve, args=(child, spec, threads, device), daemon=True,
                                name=f"bench-{self.name}")
        self.proc.start()
        child.close()
        self.info: dict = {}

    def _recv(self, timeout: float) -> dict:
        if not self.conn.poll(timeout):
            raise WorkerDied(f"{self.name}: no answer within {timeout:.0f} s")
        try:
            return self.conn.recv()
        except EOFError:
            self.proc.join(5)
            raise WorkerDied(f"{self.name}: worker exited (code {self.proc.exitcode}; out of memory?)") from None

    def wait_ready(self, timeout: float = 600) -> dict:
        self.info = self._recv(timeout)
        return self.info

    def request(self, msg: tuple, timeout: float = 3600) -> dict:
        try:
            self.conn.send(msg)
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"{self.name}: worker is gone") from None
        return self._recv(timeout)

    def close(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(10)
        self.conn.close()


def start_workers(specs: dict[str, dict], threads: int | None, device: str = "cpu") -> tuple[dict, dict]:
    """Start one worker per spec (in parallel) and wait until each has built its engine.

    Returns ({name: EngineWorker}, {name: error}) for the ones that failed to start."""
    workers = {name: EngineWorker(spec, threads, device) for name, spec in specs.items()}
    failed = {}
    for name, w in list(workers.items()):
        try:
            info = w.wait_ready()
        except WorkerDied as e:
            info = {"error": str(e)}
        if "error" in info:
            failed[name] = info["error"]
            w.close()
            del workers[name]
    return workers, failed
