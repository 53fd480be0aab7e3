"""TensorRT on a real NVIDIA GPU: lama-fourier plans at fp32 and fp16 against onnxruntime.

Run on a GPU machine: ``pytest -m gpu tests/test_tensorrt_gpu.py -s`` (``-s`` shows the latency
table). Needs ``tensorrt`` and ``cuda-python`` (or pycuda) and a driver; skipped with the reason
otherwise, so the default run skips it cleanly. Weights: ``$GLAMA_TRT_WEIGHTS`` (a LaMa ``.ckpt``
or our ``.safetensors``) if set; else a seeded random lama-fourier whose conv weights are rescaled
so activations keep a trained network's magnitude (a plain random init outputs ~0.5 everywhere).

Checks: fp32 plan vs onnxruntime (CPU) max abs error <= 1e-3; fp16 plan vs fp32 plan PSNR >= 40 dB
on real photos; CUDA-graph replay == plain execution; profile bounds; latency at 512 and 1024.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from glama_deploy.engines.tensorrt_ import cuda_device_name

from .conftest import ROOT, SAMPLES, load_rgb, make_model

PROFILE = ("1x256x256", "1x512x512", "2x1024x1024")


def _skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return f"tensorrt not installed ({e}); pip install tensorrt cuda-python"
    except Exception as e:  # noqa: BLE001 - e.g. the placeholder package without its libraries
        return f"tensorrt cannot be imported ({type(e).__name__}: {e})"
    if cuda_device_name(0) is None:
        return "no usable CUDA GPU (needs an NVIDIA driver and cuda-python or pycuda)"
    return None


SKIP = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(SKIP is not None, reason=f"TensorRT GPU tests: {SKIP}")]


def _photos(h: int, w: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Real photos at (h, w) with their masks (drawn ones from the samples, else a box)."""
    import cv2

    out = []
    files = sorted(SAMPLES.glob("*.jpg")) + sorted((ROOT / "tests" / "data").glob("*.jpg"))
    for f in files[:6]:
        rgb = load_rgb(f, (h, w))
        mpath = f.with_name(f.stem + "_mask.png")
        if mpath.is_file():
            m = cv2.resize(cv2.imread(str(mpath), cv2.IMREAD_GRAYSCALE), (w, h), interpolation=cv2.INTER_NEAREST)
            mask = (m > 127).astype(np.float32)
        else:
            mask = np.zeros((h, w), np.float32)
            mask[h // 4: h // 2, w // 3: 2 * w // 3] = 1
        out.append((f.name, np.ascontiguousarray(rgb.transpose(2, 0, 1)[None]), mask[None, None]))
    assert out, "no photos found in glama_deploy/assets/samples or tests/data"
    return out


def _lively(model):
    """Random weights with a trained network's activation sizes: PyTorch's default conv init shrinks
    activations (the output is ~0.5 everywhere). Convs outside the residual blocks get He scale
    (x sqrt(6)), those inside x1.5, so the residual stream grows to a few hundred through
    lama-fourier's 18 blocks (He scale there too grows it past fp16's range, to ~4e6); then the last
    conv is set so the logits have std ~1.5 on a photo."""
    import torch

    from glama_deploy.model.ffc import FFCResnetBlock

    in_blocks = {id(m) for b in model.modules() if isinstance(b, FFCResnetBlock) for m in b.modules()}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(1.5 if id(m) in in_blocks else math.sqrt(6.0))
        final = model.model[-2]
        _, img, mask = _photos(256, 256)[0]
        seen = {}
        hook = final.register_forward_hook(lambda mod, i, o: seen.__setitem__("z", o))
        model(torch.from_numpy(img), torch.from_numpy(mask))
        hook.remove()
        z = seen["z"]
        k = 1.5 / float(z.std())
        final.weight.mul_(k)
        final.bias.sub_(z.mean(dim=(0, 2, 3))).mul_(k)
    return model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trt_gpu")


@pytest.fixture(scope="module")
def onnx_model(workdir) -> Path:
    from export.onnx import export_onnx

    weights = os.environ.get("GLAMA_TRT_WEIGHTS")
    if weights:
        from glama_deploy.model.weights import load_generator

        model, _ = load_generator(weights)
    else:
        model = _lively(make_model("lama-fourier"))
    path = workdir / "lama-fourier.onnx"
    export_onnx(model.eval(), path, parity_sizes=())
    return path


@pytest.fixture(scope="module")
def plans(onnx_model, workdir) -> dict[str, Path]:
    from export.tensorrt import build_engine, make_profile

    out = {}
    for precision in ("fp32", "fp16"):
        path = workdir / f"lama-fourier-{precision}.plan"
        t = time.perf_counter()
        meta = build_engine(onnx_model, path, profile=make_profile(*PROFILE), precision=precision,
                            timing_cache=workdir / "timing.cache")
        print(f"\nbuilt {path.name}: {meta['plan_bytes'] / 1e6:.0f} MB, {meta['fp32_layers']} fp32 layers, "
              f"{time.perf_counter() - t:.0f} s on {meta['gpu']}")
        out[precision] = path
    return out


@pytest.fixture(scope="module")
def ort_session(onnx_model):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])


def _engine(plan: Path, **kw):
    from glama_deploy.engines import create_engine

    return create_engine("tensorrt", weights=str(plan), **kw)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-20)))


def test_sidecar_describes_the_gpu_build(plans, onnx_model, workdir):
    import json

    import tensorrt as trt

    from export.tensorrt import sha256_file

    for precision, plan in plans.items():
        side = json.loads(Path(str(plan) + ".json").read_text())
        assert side["tensorrt"] == {"module": "tensorrt", "version": trt.__version__}
        assert side["gpu"] and side["onnx"]["sha256"] == sha256_file(onnx_model)
        assert side["precision"] == precision
        assert (side["fp32_layers"] > 0) == (precision == "fp16")
    assert (workdir / "timing.cache").stat().st_size > 0


@pytest.mark.parametrize("hw", [(512, 512), (256, 384)])
def test_fp32_plan_matches_onnxruntime(plans, ort_session, hw):
    with _engine(plans["fp32"]) as eng:
        assert eng.profile == {"min": (1, 256, 256), "opt": (1, 512, 512), "max": (2, 1024, 1024)}
        for name, img, mask in _photos(*hw)[:2]:
            got = eng._run(img, mask)
            ref = ort_session.run(None, {"image": img, "mask": mask})[0]
            err = float(np.abs(got - ref).max())
            print(f"fp32 TensorRT vs onnxruntime {name} {hw}: max abs {err:.2e}")
            assert err <= 1e-3


def test_fp16_plan_psnr_vs_fp32(plans):
    with _engine(plans["fp32"]) as e32, _engine(plans["fp16"]) as e16:
        for name, img, mask in _photos(512, 512):
            ref, got = e32._run(img, mask), e16._run(img, mask)
            assert np.isfinite(got).all()
            p_raw = _psnr(got, ref)
            p_out = _psnr(e16(img, mask), e32(img, mask))
            print(f"fp16 vs fp32 {name}: PSNR raw {p_raw:.1f} dB, composited {p_out:.1f} dB")
            assert p_raw >= 40.0


def test_cuda_graph_replay_matches(plans):
    _, img, mask = _photos(512, 512)[0]
    with _engine(plans["fp16"]) as plain, _engine(plans["fp16"], cuda_graph=True) as graphed:
        ref = plain._run(img, mask)
        for _ in range(3):  # capture, then replays
            np.testing.assert_allclose(graphed._run(img, mask), ref, atol=1e-6)
        assert graphed.cuda_graph


def test_profile_bounds_and_batch_split(plans):
    from glama_deploy.engines.base import EngineError

    with _engine(plans["fp32"]) as eng:
        with pytest.raises(EngineError, match="allowed: batch 1..2, height 256..1024, width 256..1024"):
            eng(np.zeros((1, 3, 1032, 512), np.float32), np.ones((1, 1, 1032, 512), np.float32))
        photos = _photos(256, 256)[:3]
        img = np.concatenate([p[1] for p in photos])
        mask = np.concatenate([p[2] for p in photos])
        together = eng._run(img, mask)  # batch 3 > max 2: run as 2 + 1
        one_by_one = np.concatenate([eng._run(img[i:i + 1], mask[i:i + 1]) for i in range(3)])
        np.testing.assert_allclose(together, one_by_one, atol=1e-4)


def test_latency_512_and_1024(plans):
    rows = []
    for precision, plan in plans.items():
        for cuda_graph in (False, True):
            with _engine(plan, cuda_graph=cuda_graph) as eng:
                for size in (512, 1024):
                    _, img, mask = _photos(size, size)[0]
                    for _ in range(3):
                        out = eng._run(img, mask)
                    times = []
                    for _ in range(10):
                        t = time.perf_counter()
                        out = eng._run(img, mask)
                        times.append((time.perf_counter() - t) * 1000)
                    assert np.isfinite(out).all()
                    rows.append((precision, cuda_graph, size, statistics.median(times), min(times)))
    print(f"\nTensorRT latency on {cuda_device_name(0)} (batch 1, host<->device copies included):")
    print("precision  cuda_graph  size   median ms   min ms")
    for p, g, s, med, lo in rows:
        print(f"{p:9}  {str(g):10}  {s:4}  {med:10.2f}  {lo:7.2f}")


def test_weak_typing_build_where_available(onnx_model, plans, workdir):
    import tensorrt as trt

    from export.tensorrt import build_engine, has_weak_typing, make_profile

    if not has_weak_typing(trt):
        pytest.skip(f"TensorRT {trt.__version__} has no weak typing (removed in 11)")
    plan = workdir / "lama-fourier-fp16-weak.plan"
    build_engine(onnx_model, plan, profile=make_profile(*PROFILE), precision="fp16", typing="weak",
                 timing_cache=workdir / "timing.cache")
    with _engine(plans["fp32"]) as e32, _engine(plan) as weak:
        for name, img, mask in _photos(512, 512)[:3]:
            p = _psnr(weak._run(img, mask), e32._run(img, mask))
            print(f"fp16 (weak typing, layer constraints) vs fp32 {name}: {p:.1f} dB")
            assert p >= 40.0


@pytest.fixture(scope="module")
def int8_plan(onnx_model, workdir) -> Path:
    """The int8 QDQ model of export.quantize (training photos when ../shared/data is there, else the
    sample photos) built with --precision int8 (explicit quantization)."""
    from export.quantize import QuantizeError, photo_split, quantize_onnx
    from export.tensorrt import build_engine, make_profile
    from training.data import DataError

    try:
        photos = photo_split()[0]
    except (DataError, QuantizeError, OSError):
        photos = sorted(SAMPLES.glob("*.jpg")) + sorted((ROOT / "tests" / "data").glob("*.jpg"))
    qdq = workdir / "lama-fourier.int8.onnx"
    quantize_onnx(onnx_model, qdq, photos=photos)
    path = workdir / "lama-fourier-int8.plan"
    meta = build_engine(qdq, path, profile=make_profile(*PROFILE), precision="int8",
                        timing_cache=workdir / "timing.cache")
    assert meta["precision"] == "int8"
    return path


def test_int8_plan_psnr_vs_fp32(plans, int8_plan):
    """int8 (explicit quantization, FourierUnit fp32) against the fp32 plan, inside the hole."""
    with _engine(plans["fp32"]) as e32, _engine(int8_plan) as e8:
        for name, img, mask in _photos(512, 512):
            ref, got = e32(img, mask), e8(img, mask)
            assert np.isfinite(got).all()
            hole = np.broadcast_to(mask, img.shape) > 0
            p = float(10 * np.log10(1.0 / max(np.mean((got[hole] - ref[hole]) ** 2), 1e-20)))
            print(f"int8 vs fp32 {name}: in-hole PSNR {p:.1f} dB")
            assert p >= 30.0  # onnxruntime-CPU int8 is ~35 dB on this model (benchmarks/results)
