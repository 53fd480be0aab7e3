"""Run a real ``tritonserver`` (the binary in the nvidia-pytriton wheel) on a model repository.

The wheel ships Triton with the python backend only. The server and its python-backend stubs
run from their own virtual environment (numpy < 2: BLS breaks with numpy 2, while the project's
main environment needs numpy 2 for OpenCV), created by :func:`setup_env`
(``python -m glama_deploy.triton setup-env``). Nothing here imports tritonclient or pytriton: the
server environment is driven through subprocesses, so any Python can start it.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import PACKAGE_ROOT
from .shm_reclaim import ShmReclaimer, backend_stubs

log = logging.getLogger(__name__)

ENV_VAR = "GLAMA_TRITON_ENV"
DEFAULT_ENV_DIR = PACKAGE_ROOT / ".triton-env"
# What the python models need (glama_deploy itself comes from PYTHONPATH): no torch, numpy 1.x.
# opencv-python-headless 4.11+ needs numpy 2 on Python 3.9+, so it is held below that.
SERVER_PACKAGES = (
    "nvidia-pytriton>=0.5,<0.8",
    "numpy>=1.24,<2",
    "onnxruntime>=1.18",
    "opencv-python-headless>=4.8,<4.11",
    "tqdm>=4.60",
)
STAMP = "glama-triton-env.json"

_PROBE = r"""
import json, os, sys, sysconfig
import numpy, pytriton
print(json.dumps({"pytriton": os.path.dirname(pytriton.__file__), "libdir": sysconfig.get_config_var("LIBDIR"),
                  "version": "%d.%d" % sys.version_info[:2], "numpy": numpy.__version__}))
"""


class ServerError(RuntimeError):
    """The server environment is missing/broken or the server did not come up."""


class RepositoryError(ServerError):
    """The folder given as model repository is not one (bad input rather than a failure)."""


def default_env_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_ENV_DIR)


@dataclass
class ServerEnv:
    """A virtual environment holding nvidia-pytriton (tritonserver) and the python models' deps."""

    dir: Path
    python: Path
    pytriton: Path
    libdir: str
    version: str
    numpy: str

    @property
    def binary(self) -> Path:
        return self.pytriton / "tritonserver" / "bin" / "tritonserver"

    @property
    def backends(self) -> Path:
        return self.pytriton / "tritonserver" / "backends"

    @classmethod
    def find(cls, env_dir: str | os.PathLike | None = None) -> ServerEnv:
        """Locate and probe the environment; ServerError names the fix when it is unusable."""
        d = Path(env_dir) if env_dir else default_env_dir()
        python = d / "bin" / "python"
        hint = f"create it with: python -m glama_deploy.triton setup-env --dir {d}"
        if not python.exists():
            raise ServerError(f"{d}: no Triton server environment ({hint})")
        try:
            out = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=120,
                                 env=_clean_env())
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ServerError(f"{python}: cannot run ({e}); {hint}") from None
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            raise ServerError(f"{d}: broken Triton server environment ({last}); {hint}")
        info = json.loads(out.stdout.strip().splitlines()[-1])
        env = cls(d, python, Path(info["pytriton"]), info["libdir"], info["version"], info["numpy"])
        if int(env.numpy.split(".")[0]) >= 2:
            raise ServerError(f"{d}: numpy {env.numpy} in the server environment; the python backend's BLS "
                              f"needs numpy < 2 ({hint})")
        if not env.binary.is_file():
            raise ServerError(f"{env.binary}: tritonserver binary missing from nvidia-pytriton; {hint}")
        return env

    def ensure_stub(self) -> Path:
        """Put the python-backend stub built for this Python next to libtriton_python.so."""
        target = self.backends / "python" / "triton_python_backend_stub"
        source = self.pytriton / "tritonserver" / "python_backend_stubs" / self.version / target.name
        if not target.exists():
            if not source.is_file():
                raise ServerError(f"nvidia-pytriton has no python backend stub for Python {self.version}")
            tmp = target.with_suffix(".tmp")
            shutil.copy2(source, tmp)
            os.replace(tmp, target)
        return target

    def environ(self, pythonpath: str | os.PathLike | None = None, base: dict | None = None) -> dict:
        """Process environment for tritonserver and its stubs (which inherit it).

        ``pythonpath``: where the python models import glama_deploy from (see :func:`link_package`).
        """
        env = _clean_env(base)
        env["PATH"] = f"{self.dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (self.libdir, env.get("LD_LIBRARY_PATH")) if p)
        env["VIRTUAL_ENV"] = str(self.dir)
        if pythonpath:
            env["PYTHONPATH"] = str(pythonpath)
        env["PYTHONNOUSERSITE"] = "1"
        return env


def link_package(folder: str | os.PathLike) -> Path:
    """``folder/glama_deploy`` -> this glama_deploy package; put ``folder`` on the stubs' PYTHONPATH.

    Only the package is exposed: when glama_deploy is installed in the main environment's
    site-packages, putting that folder on the path would pull its numpy 2 into the server.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "glama_deploy"
    if not link.exists():
        link.symlink_to(PACKAGE_ROOT / "glama_deploy", target_is_directory=True)
    return folder


def _clean_env(base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    for k in ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "CONDA_PREFIX"):
        env.pop(k, None)
    return env


def setup_env(env_dir: str | os.PathLike | None = None, python: str | None = None, force: bool = False,
              quiet: bool = False) -> ServerEnv:
    """Create (or reuse) the server environment: a venv with :data:`SERVER_PACKAGES`, no torch.

    Idempotent: an environment whose stamp lists the same packages and that probes fine is kept.
    """
    d = Path(env_dir) if env_dir else default_env_dir()
    stamp = d / STAMP
    wanted = {"packages": list(SERVER_PACKAGES)}
    if not force and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("packages") == wanted["packages"]:
                env = ServerEnv.find(d)
                env.ensure_stub()
                return env
        except (ServerError, ValueError) as e:
            log.warning("rebuilding %s: %s", d, e)
    base = python or getattr(sys, "_base_executable", None) or sys.executable
    if force and d.exists():
        shutil.rmtree(d)
    out = None if not quiet else subprocess.DEVNULL
    if not (d / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(d)], check=True, env=_clean_env(), stdout=out)
    pip = [str(d / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    proc = subprocess.run(pip + list(SERVER_PACKAGES), env=_clean_env(), stdout=out)
    if proc.returncode != 0:
        raise ServerError(f"pip could not install {' '.join(SERVER_PACKAGES)} into {d}")
    torch_check = subprocess.run([str(d / "bin" / "python"), "-c", "import torch"], capture_output=True,
                                 env=_clean_env())
    if torch_check.returncode == 0:
        raise ServerError(f"{d}: torch got installed into the server environment (it must stay torch-free)")
    env = ServerEnv.find(d)
    env.ensure_stub()
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(wanted, indent=2) + "\n")
    os.replace(tmp, stamp)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# platform -> the backend folder Triton needs for it (the python backend is always there)
PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt", "pytorch_libtorch": "pytorch"}
SHM_PREFIX = "glama"  # + <wrapper pid> "p" <http port>: the python backend's shared-memory regions


def missing_backends(repo: Path, backends: Path) -> dict[str, str]:
    """{model: backend} for every model of ``repo`` whose backend is not in ``backends``."""
    missing = {}
    for cfg in sorted(repo.glob("*/config.pbtxt")):
        text = cfg.read_text(errors="replace")
        for platform, backend in PLATFORM_BACKENDS.items():
            if f'"{platform}"' in text and not (backends / backend).is_dir():
                missing[cfg.parent.name] = backend
    return missing


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, even by kill -9
    (Linux prctl PR_SET_PDEATHSIG), so no tritonserver outlives its wrapper holding the ports."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(shm_dir: Path = Path("/dev/shm"), proc_dir: Path = Path("/proc")) -> list[str]:
    """Remove what a killed server left: python-backend stubs whose wrapper is gone (they can outlive
    a kill -9 of tritonserver and ignore SIGTERM) and their shared-memory files. Only our own
    leftovers are touched: their names carry ``SHM_PREFIX`` and the dead wrapper's pid."""
    done = []
    for pid, args in backend_stubs(proc_dir):
        owner = _shm_owner(" ".join(args))
        if owner is not None and not _pid_alive(owner):
            try:
                os.kill(pid, signal.SIGKILL)
                done.append(f"killed orphaned stub {pid}")
            except (ProcessLookupError, PermissionError):
                pass
    for f in shm_dir.glob(f"{SHM_PREFIX}*"):
        owner = _shm_owner(f.name)
        if owner is not None and not _pid_alive(owner):
            try:
                f.unlink()
                done.append(f"removed {f}")
            except OSError:
                pass
    return done


def _shm_owner(text: str) -> int | None:
    m = re.search(rf"(?:^|[\s/]){SHM_PREFIX}(\d+)p\d+", text)
    return int(m.group(1)) if m else None


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0


class TritonServer:
    """``tritonserver`` on ``repo``; ``with TritonServer(repo) as s: s.http_url ...``.

    With ``shm_limit`` (bytes), a :class:`ShmReclaimer` reloads any idle model whose ``/dev/shm``
    region outgrew it (the server then runs with explicit model control, every model loaded).
    Ports default to free loopback ports. ``log`` receives every server log line (e.g.
    ``sys.stderr.write``); the last lines are kept for error messages either way.
    """

    def __init__(self, repo: str | os.PathLike, env: ServerEnv | str | os.PathLike | None = None, *,
                 host: str = "127.0.0.1", http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, log: Callable[[str], object] | None = None,
                 log_verbose: int = 0, extra_args: tuple[str, ...] = (), shm_limit: int = 0):
        self.repo = Path(repo).resolve()
        if not (self.repo.is_dir() and any(self.repo.glob("*/config.pbtxt"))):
            raise RepositoryError(f"{self.repo}: not a model repository (no */config.pbtxt); "
                              "build one with: python -m glama_deploy.triton build-repo")
        self.env = env if isinstance(env, ServerEnv) else ServerEnv.find(env)
        self.host = host
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.metrics_port = metrics_port
        self.log = log
        self.log_verbose = log_verbose
        self.extra_args = tuple(extra_args)
        self.shm_prefix = f"{SHM_PREFIX}{os.getpid()}p{self.http_port}"  # this server's /dev/shm regions
        self.shm_limit = shm_limit
        self.reclaimer: ShmReclaimer | None = None
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self._pump: threading.Thread | None = None
        self._pathdir: tempfile.TemporaryDirectory | None = None

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:
        return f"{self._client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    def command(self) -> list[str]:
        metrics = (["--allow-metrics=true", f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]
                   if self.metrics_port else ["--allow-metrics=false"])
        return [str(self.env.binary), f"--model-repository={self.repo}",
                f"--backend-directory={self.env.backends}",
                f"--http-address={self.host}", f"--http-port={self.http_port}",
                f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}", *metrics,
                # unique shared-memory names: several servers may run on one machine
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                "--backend-config=python,shm-default-byte-size=4194304",
                "--backend-config=python,shm-growth-byte-size=16777216",
                "--exit-timeout-secs=10", f"--log-verbose={self.log_verbose}", *self._control_args(),
                *self.extra_args]

    def _control_args(self) -> list[str]:
        """The reclaimer reloads models through the repository API: explicit control, all loaded."""
        if not self.shm_limit or any(a.startswith("--model-control-mode") for a in self.extra_args):
            return []
        return ["--model-control-mode=explicit", "--load-model=*"]

    def start(self, timeout: float = 120.0) -> TritonServer:
        """Start the server and wait until it (and every model) is ready."""
        if self.proc is not None:
            raise ServerError("server already started")
        missing = missing_backends(self.repo, self.env.backends)
        if missing:
            models = ", ".join(f"{m} ({b})" for m, b in missing.items())
            raise RepositoryError(
                f"{self.repo}: this tritonserver (nvidia-pytriton: python backend only) has no backend for "
                f"{models}. Serve the CPU flavour here: python -m glama_deploy.triton build-repo --flavour cpu "
                f"--onnx model.onnx --out triton_repo_cpu, then serve --repo triton_repo_cpu; or run this "
                f"repository in NVIDIA's Triton container, which has those backends")
        for note in clean_stale():
            log.warning("cleaned up after a killed server: %s", note)
        busy = [p for p in (self.http_port, self.grpc_port, self.metrics_port) if p and port_in_use(self.host, p)]
        if busy:
            raise ServerError(f"port(s) {', '.join(map(str, busy))} on {self.host} already in use (another "
                              f"server? `ss -ltnp | grep {busy[0]}` shows which process); choose others with "
                              f"--http-port/--grpc-port/--metrics-port")
        self.env.ensure_stub()
        self._pathdir = tempfile.TemporaryDirectory(prefix="glama-triton-path-")
        env = self.env.environ(link_package(self._pathdir.name))
        self.proc = subprocess.Popen(self.command(), env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                                     errors="replace", start_new_session=True, preexec_fn=_die_with_parent)
        self._pump = threading.Thread(target=self._read_log, daemon=True, name="tritonserver-log")
        self._pump.start()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        if self.shm_limit:
            self.reclaimer = ShmReclaimer(self.http_url, self.shm_prefix, limit_bytes=self.shm_limit,
                                          on_reload=self._reclaimed).start()
        return self

    def _reclaimed(self, model: str, held: int) -> None:
        msg = (f"reloaded {model} to give back {held / 2**20:.0f} MiB of /dev/shm "
               f"(limit {self.shm_limit / 2**20:.0f} MiB)")
        log.info(msg)
        if self.log is not None:
            self.log(f"glama-deploy: {msg}\n")

    def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.log is not None:
                try:
                    self.log(line)
                except Exception:  # a broken sink must not kill the pump (the pipe would fill up)
                    pass

    def tail(self, n: int = 30) -> str:
        return "\n".join(list(self.lines)[-n:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                time.sleep(0.2)  # let the pump read the last lines
                raise ServerError(f"tritonserver exited with code {self.proc.returncode} before it was "
                                  f"ready; last log lines:\n{self.tail()}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s; last log lines:\n{self.tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGINT (Triton unloads models and exits), then SIGKILL for the whole group if it hangs."""
        if self.reclaimer is not None:
            self.reclaimer.stop()
            self.reclaimer = None
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop in %.0f s; killing it", timeout)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        if self._pump is not None:
            self._pump.join(5)
        if self._pathdir is not None:
            self._pathdir.cleanup()
            self._pathdir = None
        return proc.returncode

    def __enter__(self) -> TritonServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["RepositoryError", "ServerEnv", "ServerError", "TritonServer", "SERVER_PACKAGES", "default_env_dir",
           "free_port", "link_package", "setup_env"]
