"""Give back the python backend's shared memory after big requests.

Each python-backend model instance talks to tritonserver through one region in ``/dev/shm``. The
region grows to hold the largest request (a 4096 x 4096 FP32 pair is ~0.5 GB) and never shrinks:
the stub has no way to return it. The only release is a new stub, so when a model's region holds
more than ``limit_bytes`` and the model has been idle for ``idle_s``, :class:`ShmReclaimer`
reloads it through the repository API with its own config (plus a counter parameter, because
Triton skips a load whose config is unchanged). Triton reloads seamlessly: the new instance is
ready before requests switch to it, requests in flight finish on the old one, and the old stub
exits with its region. Needs ``--model-control-mode=explicit`` (``serve`` starts it so).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

RELOAD_PARAMETER = "glama_shm_reload"  # the models ignore it; it only makes the config new


def backend_stubs(proc_dir: Path = Path("/proc")) -> Iterator[tuple[int, list[str]]]:
    """(pid, command line) of every running python-backend stub. tritonserver starts each as
    ``stub <repo>/<model>/<version>/model.py <shm region name> <default size> <growth> ...``."""
    for d in proc_dir.glob("[0-9]*"):
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"triton_python_backend_stub"):
            yield int(d.name), [a.decode(errors="replace") for a in args]


def regions_by_model(prefix: str, shm_dir: Path = Path("/dev/shm"),
                     proc_dir: Path = Path("/proc")) -> dict[str, dict[int, int]]:
    """Bytes of ``/dev/shm`` each python-backend stub of one server holds: {model: {stub pid: bytes}}.

    The region names start with the server's ``prefix``. Counts pages in use (tmpfs blocks), not
    the file size.
    """
    held: dict[str, dict[int, int]] = {}
    for pid, args in backend_stubs(proc_dir):
        if len(args) < 3 or not args[2].startswith(prefix):
            continue
        try:
            used = (shm_dir / args[2]).stat().st_blocks * 512
        except OSError:
            continue
        held.setdefault(Path(args[1]).parent.parent.name, {})[pid] = used
    return held


def _request(url: str, data: bytes | None = None, timeout: float = 60.0) -> dict:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body else {}


def reload_model(http_url: str, model: str, generation: int, timeout: float = 120.0) -> None:
    """Seamless reload of ``model`` with its current config (a new stub, a fresh region)."""
    config = _request(f"http://{http_url}/v2/models/{model}/config")
    config.setdefault("parameters", {})[RELOAD_PARAMETER] = {"string_value": str(generation)}
    body = json.dumps({"parameters": {"config": json.dumps(config)}}).encode()
    _request(f"http://{http_url}/v2/repository/models/{model}/load", body, timeout=timeout)


def request_count(http_url: str, model: str) -> int:
    stats = _request(f"http://{http_url}/v2/models/{model}/stats", timeout=10)
    return sum(int(s.get("inference_count", 0)) + int(s.get("execution_count", 0))
               for s in stats.get("model_stats", []))


class ShmReclaimer:
    """A daemon thread that reloads an idle model when one of its instances' shared-memory regions
    outgrew ``limit_bytes``.

    ``on_reload(model, freed_bytes)`` is called after each reload (``serve`` logs it).
    """

    def __init__(self, http_url: str, prefix: str, *, limit_bytes: int, idle_s: float = 10.0,
                 interval_s: float = 2.0, shm_dir: Path = Path("/dev/shm"),
                 on_reload: Callable[[str, int], object] | None = None):
        if limit_bytes <= 0:
            raise ValueError("limit_bytes must be positive")
        self.http_url, self.prefix = http_url, prefix
        self.limit, self.idle_s, self.interval_s = limit_bytes, idle_s, interval_s
        self.shm_dir = shm_dir
        self.on_reload = on_reload
        self.reloads: list[tuple[str, int]] = []
        self._seen: dict[str, tuple[int, float]] = {}  # model -> (request count, when it last changed)
        self._retiring: dict[str, set[int]] = {}  # model -> stubs a reload replaced, until they exit
        self._generation = int(time.time())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> list[str]:
        """One pass: reload each model over the limit that has been idle long enough."""
        done = []
        now = time.monotonic()
        for model, stubs in regions_by_model(self.prefix, self.shm_dir).items():
            if self._retiring.get(model, set()) & stubs.keys():
                continue  # the old instances finish their requests and exit after a reload
            self._retiring.pop(model, None)
            held = max(stubs.values())
            if held <= self.limit:
                self._seen.pop(model, None)
                continue
            try:
                count = request_count(self.http_url, model)
            except (urllib.error.URLError, OSError, ValueError):
                continue
            last = self._seen.get(model)
            if last is None or last[0] != count:
                self._seen[model] = (count, now)
                if self.idle_s > 0:
                    continue
            elif now - last[1] < self.idle_s:
                continue
            self._generation += 1
            try:
                reload_model(self.http_url, model, self._generation)
            except (urllib.error.URLError, OSError, ValueError) as e:
                log.warning("could not reload %s to free its shared memory: %s", model, e)
                continue
            self._seen.pop(model, None)
            self._retiring[model] = set(stubs)
            self.reloads.append((model, held))
            done.append(model)
            if self.on_reload is not None:
                self.on_reload(model, held)
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception as e:  # the watchdog must never take the server down
                log.warning("shared-memory reclaimer: %s", e)

    def start(self) -> ShmReclaimer:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="glama-shm-reclaim")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5)
            self._thread = None


__all__ = ["ShmReclaimer", "backend_stubs", "regions_by_model", "reload_model"]
