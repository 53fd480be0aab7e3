"""TensorRT engine: runs a serialized plan built by ``python -m export.tensorrt``.

``TensorRTEngine(plan_path, device=0, cuda_graph=False)``. The plan's optimization profile
(read from the engine, cross-checked with the ``<plan>.json`` sidecar) bounds batch/height/width;
inputs outside it raise :class:`EngineError` naming the allowed range, and a batch larger than
the profile's maximum is run in chunks. Device buffers are allocated once and reused (grow-only);
``cuda_graph=True`` captures one CUDA graph per input shape and replays it.

CUDA access goes through ``cuda-python`` (``cuda.bindings.runtime`` in 12.6+/13, ``cuda.cudart``
before) or, failing that, ``pycuda``. Everything here imports lazily: without TensorRT or a GPU
the constructor raises a one-line EngineError.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .base import BaseEngine, EngineError

log = logging.getLogger(__name__)

TRT_MODULES = ("tensorrt", "tensorrt_rtx")
PIP_NAMES = {"tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}
SIDECAR_SUFFIX = ".json"
_LOGGERS: dict[str, object] = {}


# --------------------------------------------------------------------------- TensorRT module
def import_tensorrt(prefer: str | None = None, allow: tuple[str, ...] = TRT_MODULES):
    """Import a TensorRT Python module: ``prefer`` ('tensorrt' or 'tensorrt_rtx') if given, else
    the first importable of ``allow``. Returns ``(module, name)``; raises EngineError if none."""
    names = [prefer] if prefer else list(allow)
    problems = []
    for name in names:
        try:
            return importlib.import_module(name), name
        except ImportError as e:
            problems.append(f"{name}: {e}")
        except Exception as e:  # noqa: BLE001 - a broken install (missing native libraries, no driver)
            problems.append(f"{name}: {type(e).__name__}: {e}")
    wanted = " or ".join(f"pip install {PIP_NAMES.get(n, n)}" for n in names)
    raise EngineError(f"TensorRT is not available ({'; '.join(problems)}); {wanted}")


def get_logger(trt, min_severity: str = "WARNING"):
    """One recording logger per TensorRT module (TensorRT keeps the first logger it is given).
    ``logger.errors`` holds the error messages since the last ``logger.clear()``."""
    key = trt.__name__
    if key in _LOGGERS:
        return _LOGGERS[key]
    severity = trt.ILogger.Severity

    class RecordingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.level = int(getattr(severity, min_severity))

        def log(self, sev, msg):  # TensorRT callback; severities: 0 internal error .. 4 verbose
            sev = int(sev)
            if sev <= int(severity.ERROR):
                self.errors.append(msg)
            if sev <= self.level:
                log.log(logging.ERROR if sev <= int(severity.ERROR) else logging.WARNING, "[%s] %s", key, msg)

        def clear(self) -> None:
            self.errors.clear()

    _LOGGERS[key] = logger = RecordingLogger()
    return logger


# --------------------------------------------------------------------------- CUDA access
def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (and 13)
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6
    return cudart


class _CudaPython:
    """CUDA runtime through cuda-python."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, device: int):
        self.rt = rt = _import_cudart()
        count = self._call(rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            raise EngineError("no CUDA GPU found (cudaGetDeviceCount = 0)")
        if device >= count:
            raise EngineError(f"CUDA device {device} does not exist ({count} GPU(s) found)")
        self._call(rt.cudaSetDevice(device), "cudaSetDevice")
        self.device = device

    def _call(self, result, what: str):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            _, name = self.rt.cudaGetErrorName(err)
            _, text = self.rt.cudaGetErrorString(err)
            raise EngineError(f"{what} failed: {name.decode()} ({text.decode()})")
        return rest[0] if len(rest) == 1 else (rest or None)

    def device_name(self) -> str:
        prop = self._call(self.rt.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = prop.name
        name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
        return f"{name} (sm_{prop.major}{prop.minor})"

    def malloc(self, nbytes: int) -> int:
        return int(self._call(self.rt.cudaMalloc(nbytes), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self._call(self.rt.cudaFree(ptr), "cudaFree")

    def stream(self):
        return self._call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    @staticmethod
    def handle(stream) -> int:
        return int(stream)

    def destroy_stream(self, stream) -> None:
        self._call(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def htod(self, dst: int, src: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync")

    def dtoh(self, dst: np.ndarray, src: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync")

    def sync(self, stream) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def capture(self, stream, fn):
        """Record what ``fn()`` enqueues on ``stream`` into an executable CUDA graph."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self.rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            fn()
        finally:
            graph = self._call(self.rt.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        try:
            return self._call(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            self.rt.cudaGraphDestroy(graph)

    def launch(self, graph_exec, stream) -> None:
        self._call(self.rt.cudaGraphLaunch(graph_exec, stream), "cudaGraphLaunch")

    def destroy_graph(self, graph_exec) -> None:
        self.rt.cudaGraphExecDestroy(graph_exec)

    def close(self) -> None:
        pass


class _PyCuda:
    """CUDA through pycuda (driver API on the device's primary context). No CUDA graphs."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, device: int):
        import pycuda.driver as drv

        self.drv = drv
        try:
            drv.init()
            count = drv.Device.count()
        except drv.Error as e:
            raise EngineError(f"pycuda cannot initialise CUDA: {e}") from None
        if count < 1:
            raise EngineError("no CUDA GPU found (pycuda: 0 devices)")
        if device >= count:
            raise EngineError(f"CUDA device {device} does not exist ({count} GPU(s) found)")
        self.dev = drv.Device(device)
        self.ctx = self.dev.retain_primary_context()  # the context TensorRT's runtime API uses
        self.ctx.push()
        self._allocs: dict[int, object] = {}

    def device_name(self) -> str:
        major, minor = self.dev.compute_capability()
        return f"{self.dev.name()} (sm_{major}{minor})"

    def malloc(self, nbytes: int) -> int:
        alloc = self.drv.mem_alloc(nbytes)
        self._allocs[int(alloc)] = alloc
        return int(alloc)

    def free(self, ptr: int) -> None:
        self._allocs.pop(ptr).free()

    def stream(self):
        return self.drv.Stream()

    @staticmethod
    def handle(stream) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream) -> None:
        pass

    # synchronous copies (pycuda's async ones want page-locked host memory); the legacy default
    # stream they use orders itself with our blocking stream
    def htod(self, dst: int, src: np.ndarray, stream) -> None:
        self.drv.memcpy_htod(dst, src)

    def dtoh(self, dst: np.ndarray, src: int, stream) -> None:
        self.drv.memcpy_dtoh(dst, src)

    def sync(self, stream) -> None:
        stream.synchronize()

    def close(self) -> None:
        for alloc in self._allocs.values():
            alloc.free()
        self._allocs.clear()
        self.ctx.pop()
        self.ctx.detach()


def load_cuda(device: int = 0):
    """A CUDA backend for ``device``: cuda-python, else pycuda; EngineError naming both problems."""
    problems = []
    for cls in (_CudaPython, _PyCuda):
        try:
            return cls(device)
        except ImportError as e:
            problems.append(f"{cls.name}: not installed ({e.name or e})")
        except EngineError as e:
            problems.append(f"{cls.name}: {e}")
        except Exception as e:  # noqa: BLE001 - a broken driver / library raises its own types
            problems.append(f"{cls.name}: {type(e).__name__}: {e}")
    raise EngineError(f"no usable CUDA GPU ({'; '.join(problems)}); TensorRT needs an NVIDIA GPU and driver "
                      "and `pip install cuda-python` (or pycuda)")


def cuda_device_name(device: int = 0) -> str | None:
    """Name of CUDA device ``device``, or None when there is no usable GPU."""
    try:
        cuda = load_cuda(device)
    except EngineError:
        return None
    try:
        return cuda.device_name()
    finally:
        cuda.close()


def _device_index(device) -> int:
    if device is None:
        return 0
    if isinstance(device, int):
        return device
    text = str(device).strip().lower()
    if text in ("cuda", "gpu"):
        return 0
    for prefix in ("cuda:", "gpu:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if not text.isdigit():
        raise EngineError(f"TensorRT runs on an NVIDIA GPU: device must be an index or 'cuda:N', got {device!r}")
    return int(text)


# --------------------------------------------------------------------------- plan + sidecar
def sidecar_path(plan_path: str | os.PathLike) -> Path:
    return Path(str(plan_path) + SIDECAR_SUFFIX)


def read_sidecar(plan_path: str | os.PathLike) -> dict:
    """The ``<plan>.json`` written beside the plan by export.tensorrt ({} if there is none)."""
    path = sidecar_path(plan_path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"{path}: unreadable plan sidecar ({e})") from None
    if not isinstance(data, dict):
        raise EngineError(f"{path}: plan sidecar is not a JSON object")
    return data


def format_range(profile: dict[str, tuple]) -> str:
    """'batch 1..4, height 256..2048, width 256..2048' from {'min': (N,H,W), 'max': (N,H,W)}."""
    lo, hi = profile["min"], profile["max"]
    return ", ".join(f"{d} {a}..{b}" for d, a, b in zip(("batch", "height", "width"), lo, hi, strict=True))


def check_in_profile(shape: tuple[int, int, int], profile: dict[str, tuple], what: str = "input") -> None:
    """EngineError unless (N,H,W) lies within the profile's min..max (batch is checked by callers
    that split batches; pass N within range)."""
    lo, hi = profile["min"], profile["max"]
    bad = [f"{d} {v}" for d, v, a, b in zip(("batch", "height", "width"), shape, lo, hi, strict=True)
           if not a <= v <= b]
    if bad:
        raise EngineError(f"{what} {'x'.join(map(str, shape))} (N x H x W after padding to /8) is outside "
                          f"the engine's optimization profile ({', '.join(bad)}); allowed: {format_range(profile)}. "
                          "Rebuild the plan with wider --min/--max (python -m export.tensorrt) or tile the image")


class TensorRTEngine(BaseEngine):
    """Runs a TensorRT plan on one GPU. See the module docstring."""

    name = "tensorrt"

    def __init__(self, plan_path: str | os.PathLike, device: int | str = 0, cuda_graph: bool = False):
        self.path = Path(plan_path)
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, capacity bytes)
        self._graphs: dict[tuple, object] = {}
        self._shape: tuple | None = None
        self.cuda = None
        self.stream = None
        if not self.path.is_file():
            raise EngineError(f"{self.path}: TensorRT plan not found")
        self.sidecar = read_sidecar(self.path)
        built_with = self.sidecar.get("tensorrt", {})
        device = _device_index(device)
        trt, self.trt_module = import_tensorrt(built_with.get("module"))
        if built_with.get("version") and built_with["version"] != trt.__version__:
            raise EngineError(f"{self.path}: plan was built with {built_with.get('module')} {built_with['version']} "
                              f"but {trt.__version__} is installed; plans only load in the exact version "
                              "that built them: rebuild it (python -m export.tensorrt)")
        self.trt = trt
        self.cuda = load_cuda(device)
        self.device = device
        self.logger = get_logger(trt)
        self.logger.clear()
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineError(f"{self.path}: TensorRT {trt.__version__} could not deserialize the plan "
                              f"({'; '.join(self.logger.errors[-3:]) or 'no message'})")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if sorted(inputs) != ["image", "mask"] or len(outputs) != 1:
            raise EngineError(f"{self.path}: expected inputs image, mask and one output; plan has inputs "
                              f"{inputs}, outputs {outputs}")
        self.input_names = ("image", "mask")
        self.output_name = outputs[0]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        mn, opt, mx = (tuple(int(v) for v in s) for s in self.engine.get_tensor_profile_shape("image", 0))
        self.profile = {"min": (mn[0], mn[2], mn[3]), "opt": (opt[0], opt[2], opt[3]), "max": (mx[0], mx[2], mx[3])}
        side = self.sidecar.get("profile")
        if side and any(tuple(side.get(k, ())) != v for k, v in self.profile.items()):
            log.warning("%s: sidecar profile %s differs from the engine's %s; using the engine's",
                        self.path, side, self.profile)
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.cuda_graph = bool(cuda_graph) and self.cuda.supports_graphs
        if cuda_graph and not self.cuda.supports_graphs:
            log.warning("CUDA graphs need cuda-python; running without (backend %s)", self.cuda.name)
        self.gpu = self.cuda.device_name()

    # ----------------------------------------------------------------- execution
    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n, _, h, w = image.shape
        max_batch = self.profile["max"][0]
        if n > max_batch:  # split into batches the profile accepts
            return np.concatenate([self._run(image[i:i + max_batch], mask[i:i + max_batch])
                                   for i in range(0, n, max_batch)])
        check_in_profile((n, h, w), self.profile)
        return self._execute(image, mask)

    def _bind(self, image_shape: tuple, mask_shape: tuple) -> tuple:
        ctx = self.context
        for name, shape in zip(self.input_names, (image_shape, mask_shape), strict=True):
            if not ctx.set_input_shape(name, shape):
                raise EngineError(f"TensorRT rejected input shape {shape} for {name}: "
                                  f"{'; '.join(self.logger.errors[-2:])}")
        out_shape = tuple(int(v) for v in ctx.get_tensor_shape(self.output_name))
        moved = False
        for name, shape in ((self.input_names[0], image_shape), (self.input_names[1], mask_shape),
                            (self.output_name, out_shape)):
            nbytes = int(np.prod(shape)) * self.dtypes[name].itemsize
            ptr, cap = self._buffers.get(name, (0, 0))
            if nbytes > cap:  # grow-only: a smaller shape reuses the buffer
                if ptr:
                    self.cuda.free(ptr)
                ptr = self.cuda.malloc(nbytes)
                self._buffers[name] = (ptr, nbytes)
                moved = True
            ctx.set_tensor_address(name, ptr)
        if moved:  # captured graphs point at the old buffers
            self._drop_graphs()
        return out_shape

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.cuda.handle(self.stream)):
            raise EngineError(f"TensorRT execution failed: {'; '.join(self.logger.errors[-3:]) or 'no message'}")

    def _execute(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        self.logger.clear()
        key = (image.shape, mask.shape)
        if key != self._shape:
            self._out_shape = self._bind(image.shape, mask.shape)
            self._shape = key
        host_in = [np.ascontiguousarray(a, dtype=self.dtypes[n]) for n, a in zip(self.input_names, (image, mask),
                                                                                strict=True)]
        out = np.empty(self._out_shape, dtype=self.dtypes[self.output_name])
        for name, arr in zip(self.input_names, host_in, strict=True):
            self.cuda.htod(self._buffers[name][0], arr, self.stream)
        if self.cuda_graph:
            self._launch_graph(key)
        else:
            self._enqueue()
        self.cuda.dtoh(out, self._buffers[self.output_name][0], self.stream)
        self.cuda.sync(self.stream)
        return out.astype(np.float32, copy=False)

    def _launch_graph(self, key) -> None:
        graph = self._graphs.get(key)
        if graph is None:
            self._enqueue()  # TensorRT needs one enqueue after a shape change before capture
            self.cuda.sync(self.stream)
            try:
                graph = self.cuda.capture(self.stream, self._enqueue)
            except EngineError as e:
                log.warning("CUDA graph capture failed (%s); running without graphs", e)
                self.cuda_graph = False
                self._enqueue()
                return
            self._graphs[key] = graph
        self.cuda.launch(graph, self.stream)

    def _drop_graphs(self) -> None:
        for g in self._graphs.values():
            self.cuda.destroy_graph(g)
        self._graphs.clear()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        cuda = self.cuda
        if cuda is None:
            return
        self._drop_graphs()
        for ptr, _ in self._buffers.values():
            cuda.free(ptr)
        self._buffers.clear()
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
        if self.stream is not None:
            cuda.destroy_stream(self.stream)
            self.stream = None
        cuda.close()
        self.cuda = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing sensible left to do
            pass

    def describe(self) -> dict:
        return {"engine": self.name, "plan": str(self.path), "tensorrt": f"{self.trt_module} {self.trt.__version__}",
                "gpu": self.gpu, "cuda": self.cuda.name if self.cuda else None, "profile": self.profile,
                "precision": self.sidecar.get("precision"), "cuda_graph": self.cuda_graph}
