"""Triton python-backend model: whole-image, tiled and two-stage GLaMa inpainting of one image.

Inputs (send one pair; request ``output_hwc`` and/or ``output``, both come back if none is named):
  ``image_hwc`` UINT8 [H,W,3] RGB + ``mask_hw`` UINT8 [H,W] (nonzero = hole)   -> ``output_hwc`` UINT8
  ``image`` FP32 [1,3,H,W] in [0,1] + ``mask`` FP32 [1,1,H,W] (1 = hole)        -> ``output`` FP32
Any H and W (padding to /8 and cropping happen here); known pixels come back unchanged.
Request parameters (optional, defaults from this model's config): ``mode`` (full | tiled |
two-stage), ``tile``, ``overlap``, ``coarse_size``.

The logic is :func:`glama_deploy.pipeline.run`; the generator is another model of the same server
(config parameter ``generator_model``; ``refine_model`` for the two-stage refine pass), called
through BLS. Every engine call is split into batches of at most ``generator_max_batch_size`` that
are all sent with ``async_exec`` at once, so the tiles of a batch are in flight together and the
generator's dynamic batcher can merge them with other clients' requests.

Written into the repository by ``python -m glama_deploy.triton build-repo``; needs numpy,
glama_deploy (pipeline, engines.base; no torch) and what the pipeline needs in the server's Python.
"""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

MODES = ("full", "tiled", "two-stage")


class BadRequest(ValueError):
    pass


class GeneratorError(RuntimeError):
    pass


def _params(model_config: dict) -> dict[str, str]:
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}


def _int_param(value, name: str, lo: int, hi: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"parameter {name!r} must be an integer, got {value!r}") from None
    if not lo <= v <= hi:
        raise BadRequest(f"parameter {name!r} must be in [{lo}, {hi}], got {v}")
    return v


def make_bls_engine(base_cls, model_name: str, max_batch: int):
    """An Engine whose backend is another model of this server, called from a worker thread.

    ``engine.loop`` must be the event loop ``execute`` runs on: each call is split into batches
    of at most ``max_batch`` that are all sent at once with ``async_exec`` on that loop.
    """

    class BlsEngine(base_cls):
        name = f"triton-bls:{model_name}"
        loop: asyncio.AbstractEventLoop | None = None

        def _run(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
            n = image.shape[0]
            chunks = [(image[i:i + max_batch], mask[i:i + max_batch]) for i in range(0, n, max_batch)]
            future = asyncio.run_coroutine_threadsafe(self._infer_all(chunks), self.loop)
            return np.concatenate(future.result())

        async def _infer_all(self, chunks):
            return await asyncio.gather(*(self._infer(img, msk) for img, msk in chunks))

        async def _infer(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
            request = pb_utils.InferenceRequest(
                model_name=model_name, requested_output_names=["output"],
                inputs=[pb_utils.Tensor("image", np.ascontiguousarray(image, dtype=np.float32)),
                        pb_utils.Tensor("mask", np.ascontiguousarray(mask, dtype=np.float32))])
            response = await request.async_exec()
            if response.has_error():
                raise GeneratorError(f"{model_name}: {response.error().message()}")
            out = pb_utils.get_output_tensor_by_name(response, "output")
            return np.array(out.as_numpy(), dtype=np.float32, copy=True)

    return BlsEngine()


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        p = _params(config)
        extra = p.get("glama_deploy_path", "")
        if extra and extra not in sys.path:
            sys.path.insert(0, extra)
        from glama_deploy.engines.base import BaseEngine, check_inputs
        from glama_deploy.pipeline import run

        self.run = run
        self.check_inputs = check_inputs
        self.name = args["model_name"]
        generator = p.get("generator_model") or "glama_onnx"
        refine = p.get("refine_model") or generator
        max_batch = max(1, int(p.get("generator_max_batch_size") or 1))
        # tiles per pipeline engine call: several generator batches in flight at once
        self.tile_batch = int(p.get("tile_batch_size") or 2 * max_batch)
        # one engine per generator for the instance's lifetime (the pipeline caches what it
        # learns about an engine, e.g. whether the model reads the pixels under the mask)
        self.engine = make_bls_engine(BaseEngine, generator, max_batch)
        self.refine_engine = self.engine if refine == generator else make_bls_engine(BaseEngine, refine, max_batch)
        self.max_side = int(p.get("max_side") or 8192)
        # full mode runs the whole image through the generator at once: its memory grows with H x W
        self.full_max_pixels = int(p.get("full_max_pixels") or 4096 * 4096)
        self.defaults = {"mode": p.get("mode") or "full", "tile": int(p.get("tile") or 512),
                         "overlap": int(p.get("overlap") or 64), "coarse_size": int(p.get("coarse_size") or 256)}
        self.pool = ThreadPoolExecutor(max_workers=int(p.get("worker_threads") or 2),
                                       thread_name_prefix="glama-pipeline")

    # -- request parsing ------------------------------------------------------------------------
    def _options(self, request) -> dict:
        raw = request.parameters()
        given = json.loads(raw) if raw else {}
        unknown = set(given) - set(self.defaults)
        if unknown:
            raise BadRequest(f"unknown request parameter(s) {sorted(unknown)}; known: {sorted(self.defaults)}")
        opts = {**self.defaults, **given}
        if opts["mode"] not in MODES:
            raise BadRequest(f"parameter 'mode' must be one of {MODES}, got {opts['mode']!r}")
        opts["tile"] = _int_param(opts["tile"], "tile", 64, 8192)
        opts["overlap"] = _int_param(opts["overlap"], "overlap", 0, opts["tile"] // 4)
        opts["coarse_size"] = _int_param(opts["coarse_size"], "coarse_size", 16, 8192)
        return opts

    def _inputs(self, request) -> tuple[np.ndarray, np.ndarray, bool]:
        """(image NCHW float32, mask N1HW float32, uint8_io) from either input pair."""
        t = {name: pb_utils.get_input_tensor_by_name(request, name)
             for name in ("image", "mask", "image_hwc", "mask_hw")}
        have = sorted(k for k, v in t.items() if v is not None)
        if have == ["image_hwc", "mask_hw"]:
            image, mask = t["image_hwc"].as_numpy(), t["mask_hw"].as_numpy()
            if image.ndim != 3 or image.shape[2] != 3:
                raise BadRequest(f"image_hwc must be [H,W,3] UINT8, got {list(image.shape)}")
            if mask.shape != image.shape[:2]:
                raise BadRequest(f"mask_hw {list(mask.shape)} does not match image_hwc {list(image.shape)}")
            uint8 = True
            image = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
            mask = (mask != 0).astype(np.float32)[None, None]
        elif have == ["image", "mask"]:
            image, mask = t["image"].as_numpy(), t["mask"].as_numpy()
            uint8 = False
        else:
            raise BadRequest(f"send either image_hwc + mask_hw (UINT8) or image + mask (FP32); got {have}")
        if image.size == 0 or mask.size == 0:
            raise BadRequest(f"empty input: image {list(image.shape)}, mask {list(mask.shape)}")
        h, w = image.shape[-2:]
        if max(h, w) > self.max_side:
            raise BadRequest(f"image {h}x{w} exceeds max side {self.max_side}")
        try:
            image, mask = self.check_inputs(image, mask)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        if image.shape[0] != 1:
            raise BadRequest(f"one image per request, got a batch of {image.shape[0]}")
        return image, mask, uint8

    # -- execution ------------------------------------------------------------------------------
    def _process(self, image: np.ndarray, mask: np.ndarray, opts: dict) -> np.ndarray:
        return self.run(self.engine, image, mask, mode=opts["mode"], tile=opts["tile"], overlap=opts["overlap"],
                        coarse_size=opts["coarse_size"], refine_engine=self.refine_engine,
                        batch_size=self.tile_batch)

    async def _one(self, request, loop):
        try:
            opts = self._options(request)
            image, mask, uint8 = self._inputs(request)
            h, w = image.shape[-2:]
            if opts["mode"] == "full" and h * w > self.full_max_pixels:
                raise BadRequest(f"mode=full on {h}x{w} = {h * w} pixels exceeds the budget of "
                                 f"{self.full_max_pixels} pixels; use mode=tiled (memory bounded by the tiles)")
            result = await loop.run_in_executor(self.pool, self._process, image, mask, opts)
        except ValueError as e:  # BadRequest, or the pipeline refusing its options (InputError)
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.name}: {e}", pb_utils.TritonError.INVALID_ARG))
        except Exception as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.name}: {type(e).__name__}: {e}"))
        # Triton lists every output when the client names none
        wanted = set(request.requested_output_names()) or {"output_hwc" if uint8 else "output"}
        outputs = []
        if "output" in wanted:
            outputs.append(pb_utils.Tensor("output", np.ascontiguousarray(result, dtype=np.float32)))
        if "output_hwc" in wanted:
            u8 = np.clip(np.rint(result[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
            outputs.append(pb_utils.Tensor("output_hwc", np.ascontiguousarray(u8)))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    async def execute(self, requests: list) -> list:
        loop = asyncio.get_running_loop()
        self.engine.loop = self.refine_engine.loop = loop
        return list(await asyncio.gather(*(self._one(r, loop) for r in requests)))

    def finalize(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
