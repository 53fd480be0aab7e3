"""export.quantize: the int8 QDQ model runs, stays close to fp32 on a real photo, keeps the
FourierUnit in float, and is accepted by TensorRT-RTX's ONNX parser; the bf16 torch engine runs
(the graph rewrites around int8: test_int8_graph.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import SAMPLES, load_rgb

PHOTOS = sorted(SAMPLES.glob("*.jpg"))  # calibration here: the two sample photos (tests stay small)


@pytest.fixture(scope="module")
def int8_onnx(tiny_onnx, tmp_path_factory):
    from export.quantize import quantize_onnx

    out = tmp_path_factory.mktemp("int8") / "tiny.int8.onnx"
    recipe = quantize_onnx(tiny_onnx, out, photos=PHOTOS, calib=4, size=64)
    return out, recipe


def _photo(h: int = 64, w: int = 96):
    import cv2

    img = np.ascontiguousarray(load_rgb(SAMPLES / "mate-dune.jpg", (h, w)).transpose(2, 0, 1)[None])
    m = cv2.imread(str(SAMPLES / "mate-dune_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = (cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 127).astype(np.float32)[None, None]
    return img, mask


def _hole_psnr(a, b, mask) -> float:
    hole = np.broadcast_to(mask, a.shape) > 0
    return float(10 * np.log10(1 / max(np.mean((a[hole] - b[hole]) ** 2), 1e-20)))


def test_recipe_is_recorded_and_the_fourier_unit_stays_float(int8_onnx):
    import onnx

    from export.precision import node_infos, select_fp32_nodes

    path, recipe = int8_onnx
    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["quantization"])
    assert meta == recipe
    assert meta["calibration"]["method"] == "percentile" and meta["calibration"]["images"] == 4
    assert meta["calibration"]["percentile"] == 99.99 and meta["rewrites"]["subpixel_upsamplers"] > 0
    assert meta["calibration"]["photos"] == sorted(p.name for p in PHOTOS)
    assert meta["kept_float"]["spectral"] > 0 and meta["quantized_ops"]["Conv"] > 5
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    kept = select_fp32_nodes(node_infos(model), keep_norm=False)
    spectral_convs = [n for n in model.graph.node if n.name in kept and n.op_type == "Conv"]
    assert spectral_convs  # the FourierUnit's 1x1 convs exist and read float tensors, not DQ outputs
    for n in spectral_convs:
        assert all(producer.get(i) != "DequantizeLinear" for i in n.input), n.name
    # no kept node reads a quantized weight (a DequantizeLinear of an initializer): the DFT basis and
    # the spectral weights stay float (the FourierUnit's input is the int8-rounded activation)
    inits = {i.name for i in model.graph.initializer}
    dq_of_weight = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    assert not [n.name for n in model.graph.node if n.name in kept and set(n.input) & dq_of_weight]
    # symmetric int8 activations (zero point 0): what TensorRT's explicit quantization accepts
    inits = {i.name: i for i in model.graph.initializer}
    zps = [onnx.numpy_helper.to_array(inits[n.input[2]]) for n in model.graph.node
           if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)


def test_int8_runs_close_to_fp32_on_a_photo(tiny_onnx, int8_onnx):
    from glama_deploy.engines.onnx_ import OnnxEngine

    img, mask = _photo()
    ref = OnnxEngine(tiny_onnx, threads=1)(img, mask)
    e8 = OnnxEngine(int8_onnx[0], threads=1)
    s8 = OnnxEngine(int8_onnx[0], threads=1, int8_as_uint8=False)
    assert e8.quantized
    got, got_s8 = e8(img, mask), s8(img, mask)
    assert np.isfinite(got).all()
    # same quantization grid either way; the int8 and uint8 kernels round differently
    assert _hole_psnr(got, ref, mask) >= 30.0  # tiny model, 4 calibration crops; lama-fourier: see reports
    assert _hole_psnr(got_s8, ref, mask) >= 30.0
    known = np.broadcast_to(mask, img.shape) == 0
    np.testing.assert_allclose(got[known], img[known], atol=1e-6)  # compositing untouched


def test_tensorrt_rtx_parser_accepts_the_int8_model(int8_onnx):
    pytest.importorskip("tensorrt_rtx", reason="pip install tensorrt-rtx (parser runs without a GPU)")
    from export.check import check_model_file
    from export.tensorrt_parser import check_with_parser

    assert check_model_file(int8_onnx[0])["QuantizeLinear"] > 0  # our op allow-list takes QDQ
    report = check_with_parser(int8_onnx[0], build=False)
    assert report["supports_model_v2"]["supported"] is True
    assert report["parse"]["layers"] > 100


def test_tensorrt_int8_needs_a_qdq_model(tiny_onnx, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="pip install tensorrt-rtx")
    from export.tensorrt import BuildError, build_engine

    with pytest.raises(BuildError, match="export.quantize"):
        build_engine(tiny_onnx, tmp_path / "x.plan", precision="int8", backend="tensorrt-rtx")


def test_cli_bad_input_exits_2(tmp_path, capsys):
    from export.quantize import main

    assert main([str(tmp_path / "missing.onnx")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'missing.onnx'}: ONNX model not found"]


def test_torch_bf16_engine_runs_close_to_fp32(tiny_model):
    from glama_deploy.engines.base import EngineError
    from glama_deploy.engines.torch_ import TorchEngine

    img, mask = _photo()
    ref = TorchEngine(tiny_model)(img, mask)
    bf16 = TorchEngine(tiny_model, precision="bf16")
    got = bf16(img, mask)
    assert got.dtype == np.float32 and bf16.describe()["precision"] == "bf16"
    assert 25.0 <= _hole_psnr(got, ref, mask) < 90.0  # really bf16 (not exact), still close
    with pytest.raises(EngineError, match="precision"):
        TorchEngine(tiny_model, precision="fp8")
