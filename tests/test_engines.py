"""Engine protocol: torch and onnxruntime behind one call, providers checked, batches, odd sizes."""

from __future__ import annotations

import numpy as np
import pytest

from glama_deploy.engines import Engine, EngineError, create_engine
from glama_deploy.engines.onnx_ import OnnxEngine
from glama_deploy.engines.torch_ import TorchEngine
from glama_deploy.errors import WeightsError

from .conftest import SAMPLES, load_rgb


def _inputs(h=120, w=168, n=1):
    img = np.stack([load_rgb(SAMPLES / "lomiri-seeding.jpg", (h, w)).transpose(2, 0, 1)] * n)
    mask = np.zeros((n, 1, h, w), np.float32)
    mask[:, :, 30:70, 50:110] = 1
    return img, mask


def test_protocol_and_describe(tiny_model, tiny_onnx):
    for engine in (TorchEngine(tiny_model), OnnxEngine(tiny_onnx, threads=1)):
        assert isinstance(engine, Engine)
        assert engine.describe()["engine"] == engine.name


def test_onnx_reports_real_providers(tiny_onnx):
    eng = OnnxEngine(tiny_onnx, threads=1)
    assert eng.providers == ["CPUExecutionProvider"]
    assert eng.session.get_session_options().intra_op_num_threads == 1


def test_cuda_request_on_cpu_is_detected(tiny_onnx, caplog):
    """onnxruntime falls back silently; we check get_providers() and say so (or refuse)."""
    eng = OnnxEngine(tiny_onnx, device="cuda")
    assert eng.providers == ["CPUExecutionProvider"]
    assert "asked for CUDAExecutionProvider" in caplog.text
    with pytest.raises(EngineError, match="asked for CUDAExecutionProvider"):
        OnnxEngine(tiny_onnx, device="cuda", strict_providers=True)


def test_batch_equals_single(tiny_model):
    eng = TorchEngine(tiny_model)
    img, mask = _inputs(n=2)
    img[1] = img[1, :, ::-1]  # different content in the second item
    both = eng(img, mask)
    assert np.abs(both[1:] - eng(img[1:], mask[1:])).max() < 1e-5
    assert np.abs(both[:1] - eng(img[:1], mask[:1])).max() < 1e-5


def test_known_pixels_bit_exact_and_empty_mask(tiny_onnx):
    eng = OnnxEngine(tiny_onnx, threads=1)
    img, mask = _inputs(117, 93)
    out = eng(img, mask)
    keep = np.broadcast_to(mask == 0, img.shape)
    assert np.array_equal(out[keep], img[keep])
    assert np.array_equal(eng(img, np.zeros_like(mask)), img)


@pytest.mark.parametrize("bad,needle", [
    (lambda i, m: (i[:, :2], m), "image must be"),
    (lambda i, m: (i, m[:, :, :-1]), "does not match"),
    (lambda i, m: (i[0], m), "image must be"),
])
def test_bad_arrays(tiny_model, bad, needle):
    img, mask = _inputs(64, 64)
    with pytest.raises(ValueError, match=needle):
        TorchEngine(tiny_model)(*bad(img, mask))


def test_factory_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("tflite", "x")
    with pytest.raises(EngineError, match="ONNX model not found"):
        create_engine("onnxruntime", str(tmp_path / "none.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="junk.onnx: not a loadable ONNX model"):
        create_engine("onnxruntime", str(tmp_path / "junk.onnx"))


def test_gpu_extra_brings_the_gpu_stack():
    """`pip install -e ".[gpu]"` names TensorRT, CUDA bindings, the Triton client and the exporter's
    needs (onnxruntime-gpu is swapped in by hand: it must never sit beside onnxruntime)."""
    import tomllib

    from .conftest import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0] for r in extras["gpu"]}
    assert {"tensorrt", "cuda-python", "tritonclient", "onnx", "onnxscript"} <= names
    assert "onnxruntime-gpu" not in names and "onnxruntime" not in names
