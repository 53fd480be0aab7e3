"""Triton Inference Server engine (tritonclient over HTTP or gRPC).

Two kinds of model on the server (see docs/triton.md and ``python -m glama_deploy.triton``):
- a generator (``glama_onnx``, ``glama_trt``, ``glama_onnx_py``): the engine pads to /8, sends
  batches of at most the model's ``max_batch_size``, crops and composites here, like every local
  engine, so ``pipeline.run`` tiles / two-stage work client-side on top of it;
- ``glama_pipeline``: whole images go to the server (one request per image), which pads, runs the
  pipeline and composites; :meth:`TritonEngine.run` passes mode/tile/overlap/coarse_size along.
One engine may be shared by threads: it keeps one tritonclient per thread (the HTTP client is
gevent-based and must stay on the thread that made it).
"""

from __future__ import annotations

import threading

import numpy as np

from .base import BaseEngine, EngineError, check_inputs

DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


def _client_module(protocol: str):
    try:
        if protocol == "http":
            import tritonclient.http as mod
        elif protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            raise EngineError(f"unknown Triton protocol {protocol!r} (http or grpc)")
    except ImportError as e:
        raise EngineError(f"tritonclient is not installed (pip install 'tritonclient[http,grpc]'): {e}") from None
    return mod


class TritonEngine(BaseEngine):
    name = "triton"

    def __init__(self, url: str | None = None, protocol: str = "http", model_name: str = "glama_onnx",
                 model_version: str = "", timeout: float = 120.0, verbose: bool = False):
        self.protocol = protocol
        self.mod = _client_module(protocol)
        from tritonclient.utils import InferenceServerException

        self._exc = InferenceServerException
        url = url or f"localhost:{DEFAULT_PORTS[protocol]}"
        ssl = url.startswith("https://")
        url = url.split("://", 1)[-1].rstrip("/")
        self.url, self.model_name, self.model_version, self.timeout = url, model_name, model_version, timeout
        self._ssl, self._verbose = ssl, verbose
        self._tls = threading.local()  # tritonclient.http is gevent-based: one client per thread
        self._clients: list = []
        self._lock = threading.Lock()
        where = f"Triton server {url} ({protocol})"
        try:
            live = self.client.is_server_live()
        except Exception as e:  # connection refused, DNS, wrong protocol on that port ...
            hint = ""
            if url.endswith(f":{DEFAULT_PORTS['http']}") and protocol == "grpc":
                hint = " (gRPC usually listens on port 8001)"
            elif url.endswith(f":{DEFAULT_PORTS['grpc']}") and protocol == "http":
                hint = " (HTTP usually listens on port 8000)"
            self.close()
            raise EngineError(f"no Triton server answers at {url} ({protocol}){hint}: {_message(e)}") from None
        if not live:
            raise EngineError(f"{where}: server is not live")
        self._check_model_ready(where)
        cfg = self._call(self.client.get_model_config, model_name, model_version,
                         **({"as_json": True} if protocol == "grpc" else {}))
        cfg = cfg.get("config", cfg)  # gRPC wraps the config
        self.max_batch_size = int(cfg.get("max_batch_size", 0) or 0)
        role = cfg.get("parameters", {}).get("glama_role", {}).get("string_value", "")
        self.is_pipeline = role == "pipeline" or (not role and self.max_batch_size == 0)
        names = {i["name"] for i in cfg.get("input", [])}
        if not {"image", "mask"} <= names:
            raise EngineError(f"{where}: model {model_name!r} has inputs {sorted(names)}, not image + mask "
                              "(is it a GLaMa model?)")

    # -- helpers --------------------------------------------------------------------------------
    @property
    def client(self):
        """This thread's tritonclient (the HTTP client must stay on the thread that made it)."""
        c = getattr(self._tls, "client", None)
        if c is None:
            if self.protocol == "http":
                c = self.mod.InferenceServerClient(self.url, verbose=self._verbose, ssl=self._ssl,
                                                   connection_timeout=10.0, network_timeout=self.timeout)
            else:
                c = self.mod.InferenceServerClient(self.url, verbose=self._verbose, ssl=self._ssl)
            self._tls.client = c
            with self._lock:
                self._clients.append(c)
        return c

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._exc as e:
            raise EngineError(f"Triton {self.protocol} {self.url}, model {self.model_name!r}: {_message(e)}") from None
        except Exception as e:  # socket errors when the server goes away mid-request
            raise EngineError(f"Triton {self.protocol} {self.url}: {type(e).__name__}: {e}") from None

    def _check_model_ready(self, where: str) -> None:
        if self._call(self.client.is_model_ready, self.model_name, self.model_version):
            return
        try:
            index = self.client.get_model_repository_index(
                **({"as_json": True} if self.protocol == "grpc" else {}))
            models = index.get("models", []) if isinstance(index, dict) else index
        except Exception:
            models = []
        states = {m.get("name"): (m.get("state", "?"), m.get("reason", "")) for m in models}
        if self.model_name in states:
            state, reason = states[self.model_name]
            raise EngineError(f"{where}: model {self.model_name!r} is not ready (state {state}"
                              f"{': ' + reason if reason else ''})")
        known = ", ".join(sorted(n for n in states if n)) or "none listed"
        raise EngineError(f"{where}: no model named {self.model_name!r} (models: {known})")

    def _infer(self, inputs: dict[str, np.ndarray], output: str, parameters: dict | None = None) -> np.ndarray:
        m = self.mod
        tensors = []
        for name, arr in inputs.items():
            dtype = "UINT8" if arr.dtype == np.uint8 else "FP32"
            t = m.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(np.ascontiguousarray(arr))
            tensors.append(t)
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        result = self._call(self.client.infer, self.model_name, tensors, model_version=self.model_version,
                            outputs=[m.InferRequestedOutput(output)], parameters=parameters or None, **kwargs)
        out = result.as_numpy(output)
        if out is None:
            raise EngineError(f"Triton model {self.model_name!r} returned no {output!r} tensor")
        return out

    # -- Engine protocol ------------------------------------------------------------------------
    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not self.is_pipeline:
            return super().__call__(image, mask)
        return self.run(image, mask)

    def run(self, image: np.ndarray, mask: np.ndarray, mode: str | None = None, *, tile: int | None = None,
            overlap: int | None = None, coarse_size: int | None = None) -> np.ndarray:
        """Inpaint NCHW images; on a pipeline model the server runs ``mode`` (default: its config)."""
        if not self.is_pipeline:
            from ..pipeline import run as run_pipeline

            extra = {k: v for k, v in (("tile", tile), ("overlap", overlap), ("coarse_size", coarse_size))
                     if v is not None}
            return run_pipeline(self, image, mask, mode or "full", **extra)
        image, mask = check_inputs(image, mask)
        params = {k: v for k, v in (("mode", mode), ("tile", tile), ("overlap", overlap),
                                    ("coarse_size", coarse_size)) if v is not None}
        outs = [self._infer({"image": image[i:i + 1], "mask": mask[i:i + 1]}, "output", params)
                for i in range(image.shape[0])]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        step = self.max_batch_size or image.shape[0]
        outs = [self._infer({"image": image[i:i + step], "mask": mask[i:i + step]}, "output")
                for i in range(0, image.shape[0], step)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        self._tls = threading.local()
        for c in clients:
            try:
                c.close()
            except Exception:  # a gevent client closed from another thread; the socket goes anyway
                pass

    def describe(self) -> dict:
        return {"engine": self.name, "url": self.url, "protocol": self.protocol, "model": self.model_name,
                "kind": "pipeline" if self.is_pipeline else "generator", "max_batch_size": self.max_batch_size}


def _message(e: Exception) -> str:
    msg = e.message() if hasattr(e, "message") and callable(e.message) else str(e)
    return " ".join(str(msg).split())


__all__ = ["TritonEngine"]
