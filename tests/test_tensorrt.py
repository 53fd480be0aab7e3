"""TensorRT export and engine, CPU side.

Real TensorRT work here goes through ``tensorrt-rtx`` (its ONNX parser and builder run without a
GPU): the exported tiny graph parses, builds at fp32/fp16 and passes ``export.check
--tensorrt-parser``; a DFT graph is refused. The fp16/fp32 split is checked on the exported graph's
real node list, on the layers of the network the parser made, and numerically (onnxruntime, a real
photo). TensorRTEngine's execution logic runs against a fake TensorRT/CUDA pair; its error paths
run with the modules missing. Running a plan on a GPU is tests/test_tensorrt_gpu.py.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from export import tensorrt as trt_export
from export.check import CheckError
from export.precision import (
    NORM_OPS,
    LayerInfo,
    NodeInfo,
    layer_onnx_node,
    node_infos,
    select_fp32_layers,
    select_fp32_nodes,
    to_mixed_precision,
)
from export.tensorrt import BuildError, make_profile, parse_shape
from export.tensorrt_parser import check_with_parser, unsupported_node_ranges
from glama_deploy.engines import create_engine
from glama_deploy.engines import tensorrt_ as trt_engine
from glama_deploy.engines.base import EngineError

from .conftest import SAMPLES, load_rgb

SPECTRAL = {"MatMul", "Cos", "Sin", "Range"}


def _rtx():
    return pytest.importorskip("tensorrt_rtx", reason="tensorrt-rtx not installed (pip install tensorrt-rtx)")


@pytest.fixture(scope="module")
def tiny_proto(tiny_onnx):
    import onnx

    return onnx.load(str(tiny_onnx))


def _photo_batch(h: int = 256, w: int = 384):
    rgb = load_rgb(SAMPLES / "mate-dune.jpg", (h, w))
    img = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])
    mask = np.zeros((1, 1, h, w), np.float32)
    mask[..., h // 4: 3 * h // 4, w // 4: w // 2] = 1
    mask[..., 20:60, 250:330] = 1
    return img, mask


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


# --------------------------------------------------------------------------- profile shapes
def test_parse_shape_and_profile_defaults():
    assert parse_shape("1x512x512") == (1, 512, 512)
    assert parse_shape("256x384") == (1, 256, 384)
    assert parse_shape("4X64x72") == (4, 64, 72)
    p = make_profile()
    assert (p.min, p.opt, p.max) == ((1, 256, 256), (1, 512, 512), (1, 2048, 2048))
    p = make_profile(max="1x384x384")  # defaults follow what was given
    assert (p.min, p.opt, p.max) == ((1, 256, 256), (1, 384, 384), (1, 384, 384))
    p = make_profile(min="2x64x64")
    assert (p.min, p.opt, p.max) == ((2, 64, 64), (2, 512, 512), (2, 2048, 2048))
    assert p.input_shapes(3) == ((2, 3, 64, 64), (2, 3, 512, 512), (2, 3, 2048, 2048))
    assert make_profile(opt=(1, 1024, 1024)).to_dict()["opt"] == [1, 1024, 1024]


@pytest.mark.parametrize("kwargs, message", [
    ({"min": "1x250x256"}, "--min: height 250 is not a multiple of 8"),
    ({"max": "1x2048x2047"}, "--max: width 2047 is not a multiple of 8"),
    ({"opt": "big"}, "--opt: 'big' is not NxHxW"),
    ({"opt": "1x2x8x8"}, "is not NxHxW"),
    ({"min": "0x256x256"}, "batch must be >= 1"),
    ({"min": "1x512x512", "opt": "1x256x256"}, "profile height: need min <= opt <= max, got 512 / 256 / 2048"),
    ({"opt": "4x512x512", "max": "2x1024x1024"}, "profile batch: need min <= opt <= max"),
])
def test_profile_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_profile(**kwargs)


def test_cli_rejects_bad_profile_before_touching_tensorrt(tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"not used")
    rc = trt_export.main(["--onnx", str(onnx_path), "--out", str(tmp_path / "m.plan"), "--max", "1x1000x1001"])
    assert rc == 2
    assert "--max: width 1001 is not a multiple of 8" in capsys.readouterr().err
    assert not (tmp_path / "m.plan").exists()


# --------------------------------------------------------------------------- which parts stay fp32
def test_fp32_selection_on_exported_graph(tiny_proto):
    nodes = node_infos(tiny_proto)
    chosen = select_fp32_nodes(nodes)
    by_op = Counter(n.op_type for n in nodes)
    picked = Counter(n.op_type for n in nodes if n.name in chosen)
    for op in SPECTRAL:  # every DFT-as-matmul op, by name from the real export
        assert by_op[op] > 0 and picked[op] == by_op[op], op
    assert picked["BatchNormalization"] == by_op["BatchNormalization"] > 0
    assert {chosen[n.name] for n in nodes if n.op_type in NORM_OPS} == {"norm"}
    fu_convs = [n for n in nodes if n.op_type == "Conv" and "FourierUnit" in n.scope]
    other_convs = [n for n in nodes if n.op_type in ("Conv", "ConvTranspose") and "FourierUnit" not in n.scope]
    assert fu_convs and all(n.name in chosen for n in fu_convs)  # the spectral 1x1 conv too
    assert other_convs and not any(n.name in chosen for n in other_convs)
    assert not any(n.name in chosen for n in nodes if n.op_type == "Sigmoid")
    # the nodes the exporter's optimiser added without metadata follow their producers
    unscoped = [n for n in nodes if not n.scope]
    assert unscoped and all(chosen.get(n.name) == "spectral" for n in unscoped)
    # keep_norm=False lowers the norms only
    no_norm = select_fp32_nodes(nodes, keep_norm=False)
    assert set(no_norm) == {k for k, v in chosen.items() if v == "spectral"}


def test_fp32_selection_pattern_fallback_without_metadata(tiny_proto):
    """A graph without scope metadata (another exporter, a stripped file) is matched by op pattern."""
    bare = [NodeInfo(n.name, n.op_type, n.inputs, n.outputs) for n in node_infos(tiny_proto)]
    chosen = select_fp32_nodes(bare)
    picked = Counter(n.op_type for n in bare if n.name in chosen)
    total = Counter(n.op_type for n in bare)
    for op in SPECTRAL:
        assert picked[op] == total[op] > 0
    assert picked["Conv"] == picked["ConvTranspose"] == picked["Relu"] == picked["Pad"] == 0
    assert set(chosen.values()) == {"spectral-pattern", "norm"}
    # the basis construction (Floor/Div/Sqrt/Reciprocal from the runtime size) is part of it
    assert picked["Floor"] == total["Floor"] and picked["Reciprocal"] == total["Reciprocal"]


def test_layer_to_node_mapping():
    nodes = {"node_matmul", "node_matmul_1", "node_conv"}
    assert layer_onnx_node(LayerInfo("x", "MATRIX_MULTIPLY", "[ONNX Layer: node_matmul_1]"), nodes) == "node_matmul_1"
    assert layer_onnx_node(LayerInfo("node_matmul", "MATRIX_MULTIPLY"), nodes) == "node_matmul"
    assert layer_onnx_node(LayerInfo("node_matmul_1_2", "SHUFFLE"), nodes) == "node_matmul_1"  # parser helper
    assert layer_onnx_node(LayerInfo("ONNXTRT_Broadcast", "SHUFFLE"), nodes) is None
    layers = [LayerInfo("a", "MATRIX_MULTIPLY", "[ONNX Layer: node_matmul]"),
              LayerInfo("b", "CONSTANT", "[ONNX Layer: node_matmul]"),
              LayerInfo("c", "SHAPE", "[ONNX Layer: node_matmul]"),
              LayerInfo("d", "ELEMENTWISE", "[ONNX Layer: node_matmul]", float_output=False),
              LayerInfo("e", "CONVOLUTION", "[ONNX Layer: node_conv]")]
    assert select_fp32_layers(layers, {"node_matmul"}) == ["a"]


def test_fp32_layers_on_the_parsed_network(tiny_proto):
    """Map the selection onto the layers tensorrt-rtx's parser really creates from the export."""
    trt = _rtx()
    logger = trt_engine.get_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(tiny_proto.SerializeToString())
    layers = trt_export.network_layers(network, trt)
    chosen = select_fp32_nodes(node_infos(tiny_proto))
    fp32 = set(select_fp32_layers(layers, chosen))
    types_ = {layer.name: layer.type for layer in layers}
    matmuls = [n for n, t in types_.items() if t == "MATRIX_MULTIPLY"]
    assert matmuls and all(n in fp32 for n in matmuls)  # every MatMul here is a DFT
    assert {"UNARY"} <= {types_[n] for n in fp32}  # Cos / Sin
    assert not {types_[n] for n in fp32} & {"CONSTANT", "SHAPE", "CAST"}
    convs_kept = [n for n in fp32 if types_[n] == "CONVOLUTION"]
    fu_convs = {n.name for n in node_infos(tiny_proto) if n.op_type == "Conv" and "FourierUnit" in n.scope}
    assert {layer_onnx_node(next(x for x in layers if x.name == n), fu_convs) for n in convs_kept} == fu_convs
    assert not [n for n, t in types_.items() if t == "DECONVOLUTION" and n in fp32]


# --------------------------------------------------------------------------- mixed-precision graph
def test_mixed_precision_graph_is_valid_and_typed(tiny_proto):
    import onnx
    from onnx import TensorProto

    chosen = select_fp32_nodes(node_infos(tiny_proto))
    mixed = to_mixed_precision(tiny_proto, chosen, "fp16")
    onnx.checker.check_model(mixed, full_check=True)
    io_types = [v.type.tensor_type.elem_type for v in list(mixed.graph.input) + list(mixed.graph.output)]
    assert io_types == [TensorProto.FLOAT] * 3
    dims = [d.dim_param for d in mixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]  # still dynamic
    inits = {t.name: t.data_type for t in mixed.graph.initializer}
    weight_of = {n.name: n.input[1] for n in mixed.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    for name, w in weight_of.items():
        assert inits[w] == (TensorProto.FLOAT if name in chosen else TensorProto.FLOAT16), name
    assert sum(n.op_type == "MatMul" for n in mixed.graph.node) == 96
    casts = [n for n in mixed.graph.node if n.name.endswith("__cast") or n.name.endswith("__cast_out")]
    assert casts and {a.i for n in casts for a in n.attribute} == {TensorProto.FLOAT, TensorProto.FLOAT16}
    with pytest.raises(ValueError, match="low precision"):
        to_mixed_precision(tiny_proto, chosen, "int8")


def test_fp16_graph_matches_fp32_on_a_photo(tiny_proto):
    """onnxruntime CPU runs the fp16 graph on a real photo. The test model has trained-like activation
    scales (conftest.liven): a default-init model outputs 0.5 +- 0.005, which any fp16 comparison passes."""
    import onnxruntime as ort

    model = tiny_proto
    chosen = select_fp32_nodes(node_infos(model))
    img, mask = _photo_batch()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def run(proto):
        sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return sess.run(None, {"image": img, "mask": mask})[0]

    ref = run(model)
    assert ref.std() > 0.1  # a lively output, not a constant 0.5
    mixed = run(to_mixed_precision(model, chosen, "fp16"))
    everything_fp16 = run(to_mixed_precision(model, {}, "fp16"))
    assert mixed.dtype == np.float32
    p_mixed, p_all = _psnr(mixed, ref), _psnr(everything_fp16, ref)
    print(f"fp16 vs fp32 PSNR: spectral+norm kept fp32 {p_mixed:.1f} dB, everything fp16 {p_all:.1f} dB")
    assert p_mixed >= 40.0
    assert p_mixed > p_all + 3.0  # keeping the DFT in fp32 is what buys the accuracy


# --------------------------------------------------------------------------- real builds (tensorrt-rtx)
def test_build_fp32_and_fp16_plans_with_rtx(tiny_onnx, tmp_path):
    trt = _rtx()
    profile = make_profile("1x64x64", "1x256x256", "2x1024x1024")
    metas = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / f"tiny_{precision}.plan"
        meta = trt_export.build_engine(tiny_onnx, out, profile=profile, precision=precision, backend="tensorrt-rtx",
                                       workspace_gb=1)
        blob = out.read_bytes()
        side = json.loads((tmp_path / f"tiny_{precision}.plan.json").read_text())
        assert side == meta
        assert side["plan_bytes"] == len(blob) > 1_000_000
        assert side["plan_sha256"] == hashlib.sha256(blob).hexdigest()  # the file is the engine, no header
        assert side["onnx"] == {"path": "tiny.onnx", "sha256": trt_export.sha256_file(tiny_onnx)}
        assert side["profile"] == {"min": [1, 64, 64], "opt": [1, 256, 256], "max": [2, 1024, 1024]}
        assert side["inputs"]["image"]["max"] == [2, 3, 1024, 1024]
        assert side["inputs"]["mask"]["min"] == [1, 1, 64, 64]
        assert side["tensorrt"] == {"module": "tensorrt_rtx", "version": trt.__version__}
        assert side["precision"] == precision and side["typing"] == "strong" and side["tf32"] is False
        assert side["gpu"] is None and side["workspace_gb"] == 1
        metas[precision] = side
    assert metas["fp32"]["fp32_layers"] == metas["fp32"]["fp32_nodes"] == 0
    assert metas["fp16"]["fp32_layers"] > 100 and metas["fp16"]["fp32_reasons"]["norm"] > 0
    assert metas["fp16"]["plan_bytes"] < metas["fp32"]["plan_bytes"]  # fp16 weights outside the DFT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_fp16.plan", "tiny_fp16.plan.json",
                                                          "tiny_fp32.plan", "tiny_fp32.plan.json"]  # no temp files


def test_bf16_graph_parses_with_rtx(tiny_proto):
    """bf16: ConvTranspose stays fp32 (TensorRT-RTX 1.7 cannot build a bf16 deconvolution)."""
    trt = _rtx()
    chosen = trt_export.precision_nodes(tiny_proto, "bf16")
    assert Counter(chosen.values())["bf16-deconv"] == 3
    mixed = to_mixed_precision(tiny_proto, chosen, "bf16")
    logger = trt_engine.get_logger(trt)
    network = trt.Builder(logger).create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(mixed.SerializeToString()), trt_export.parser_errors(parser)
    dtypes = {str(network.get_layer(i).get_output(0).dtype).split(".")[-1] for i in range(network.num_layers)}
    assert {"BF16", "FLOAT"} <= dtypes
    assert str(network.get_output(0).dtype).endswith("FLOAT")


def test_weak_typing_is_refused_where_tensorrt_removed_it(tiny_onnx, tmp_path):
    _rtx()
    with pytest.raises(BuildError, match="no weak typing"):
        trt_export.build_engine(tiny_onnx, tmp_path / "w.plan", precision="fp16", typing="weak",
                                backend="tensorrt-rtx")
    assert not list(tmp_path.iterdir())


def test_build_without_tensorrt_says_what_to_install(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BuildError, match=r"pip install tensorrt.*--backend tensorrt-rtx"):
        trt_export.build_engine(tiny_onnx, tmp_path / "m.plan")
    with pytest.raises(BuildError, match="not found"):
        trt_export.build_engine(tmp_path / "missing.onnx", tmp_path / "m.plan", backend="tensorrt-rtx")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- parser proof
def test_check_cli_tensorrt_parser_on_export(tiny_onnx, capsys):
    """``python -m export.check model.onnx --tensorrt-parser``: supports_model_v2, parse, build."""
    trt = _rtx()
    from export.check import main

    assert main([str(tiny_onnx), "--tensorrt-parser", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["tensorrt_parser"]
    assert report["backend"] == "tensorrt_rtx" and report["version"] == trt.__version__
    assert report["supports_model_v2"]["supported"] is True and report["supports_model_v2"]["subgraphs"] == 1
    assert report["parse"]["layers"] > 500
    assert report["parse"]["io"]["image"]["shape"] == [-1, 3, -1, -1]  # batch, H and W stay dynamic
    assert report["parse"]["io"]["output"] == {"shape": [-1, 3, -1, -1], "dtype": "FLOAT"}
    assert report["build"]["ran"] is True and report["build"]["plan_bytes"] > 1_000_000
    assert report["build"]["profile"] == {"min": [1, 256, 256], "opt": [1, 512, 512], "max": [1, 2048, 2048]}


def _dft_model():
    """conv -> DFT -> slice -> relu, as the dynamo exporter would emit an rfft: must be refused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3), np.float32), "w")
    axis = numpy_helper.from_array(np.array(2, np.int64), "axis")
    shape = numpy_helper.from_array(np.array([0, 4, -1, 1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv_in", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["c", "shape"], ["r"], name="to_signal"),
        helper.make_node("DFT", ["r", "", "axis"], ["f"], name="spectral_dft", onesided=1),
        helper.make_node("Relu", ["f"], ["y"], name="relu_out"),
    ]
    graph = helper.make_graph(
        nodes, "dft", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 129, 2])], initializer=[w, axis, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    return model


def test_parser_refuses_a_dft_graph(tmp_path):
    _rtx()
    import onnx

    path = tmp_path / "dft.onnx"
    onnx.save(_dft_model(), str(path))
    with pytest.raises(CheckError) as err:
        check_with_parser(path)
    msg = str(err.value)
    assert "does not support the graph" in msg and "nodes 2-2 [DFT] (spectral_dft)" in msg
    assert "node 2 (spectral_dft, DFT)" in msg
    with pytest.raises(CheckError, match="not found"):
        check_with_parser(tmp_path / "missing.onnx")


def test_unsupported_node_ranges():
    nodes = [("a", "Conv"), ("b", "DFT"), ("c", "DFT"), ("d", "Relu"), ("e", "STFT"), ("f", "Relu")]
    subgraphs = [([0], True), ([3], True), ([5], False)]
    assert unsupported_node_ranges(nodes, subgraphs) == [
        {"first": 1, "last": 2, "ops": ["DFT"], "names": ["b", "c"]},
        {"first": 4, "last": 4, "ops": ["STFT"], "names": ["e"]}]
    # every node in some subgraph: the subgraphs marked unsupported are the culprits
    assert unsupported_node_ranges(nodes, [([0, 1, 2], True), ([3, 4, 5], False)])[0]["first"] == 3
    assert unsupported_node_ranges(nodes[:1], [([0], True)]) == []


def test_parser_check_without_any_tensorrt(tiny_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(CheckError, match="no TensorRT ONNX parser.*pip install tensorrt-rtx"):
        check_with_parser(tiny_onnx)


def test_parser_check_with_tensorrt_but_no_gpu(tiny_onnx, monkeypatch):
    """TensorRT proper cannot create a builder without a GPU (not even to parse): say so."""
    from export import tensorrt_parser

    mod = _fake_trt(monkeypatch)
    mod.ILogger = type("ILogger", (), {"Severity": types.SimpleNamespace(ERROR=1, WARNING=2),
                                       "__init__": lambda self: None})

    def no_builder(logger):
        logger.log(1, "CUDA initialization failure with error: 35")
        raise TypeError("pybind11::init(): factory function returned nullptr")

    mod.Builder = no_builder
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    monkeypatch.setattr(trt_engine, "_LOGGERS", {})  # keep the fake logger out of other tests
    monkeypatch.setattr(tensorrt_parser, "cuda_device_name", lambda device=0: None)
    with pytest.raises(CheckError, match="tensorrt 10.13.0 cannot create a builder.*needs a CUDA GPU even to parse"):
        check_with_parser(tiny_onnx)


# --------------------------------------------------------------------------- sidecar
def test_sidecar_contents(tmp_path):
    profile = make_profile("1x256x256", "1x512x512", "4x1024x1536")
    side = trt_export.build_sidecar(
        plan_path=tmp_path / "m.plan", plan_sha256="ab" * 32, plan_bytes=123, onnx_path="/x/model.onnx",
        onnx_sha256="cd" * 32, profile=profile, input_shapes={"image": profile.input_shapes(3)},
        precision="fp16", typing="strong", fp32_nodes={"a": "spectral", "b": "spectral", "c": "norm"},
        fp32_layers=5, trt_module="tensorrt", trt_version="10.13.0", gpu="NVIDIA L4 (sm_89)", tf32=False,
        workspace_gb=4.0, timing_cache="tc.bin", build_seconds=12.345)
    assert json.loads(json.dumps(side)) == side
    assert side["plan"] == "m.plan" and side["onnx"] == {"path": "model.onnx", "sha256": "cd" * 32}
    assert side["profile"] == {"min": [1, 256, 256], "opt": [1, 512, 512], "max": [4, 1024, 1536]}
    assert side["inputs"]["image"]["max"] == [4, 3, 1024, 1536]
    assert side["fp32_layers"] == 5 and side["fp32_nodes"] == 3
    assert side["fp32_reasons"] == {"spectral": 2, "norm": 1}
    assert side["tensorrt"] == {"module": "tensorrt", "version": "10.13.0"} and side["gpu"] == "NVIDIA L4 (sm_89)"
    assert side["build_seconds"] == 12.35 and side["built_at"].endswith("+00:00")


# --------------------------------------------------------------------------- engine: errors
@pytest.fixture
def plan(tmp_path) -> Path:
    p = tmp_path / "m.plan"
    p.write_bytes(b"\0" * 64)
    return p


def _fake_trt(monkeypatch, version: str = "10.13.0") -> types.ModuleType:
    mod = types.ModuleType("tensorrt")
    mod.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def _no_cuda(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


def test_engine_without_tensorrt(plan, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(EngineError, match="TensorRT is not available.*pip install tensorrt"):
        create_engine("tensorrt", weights=str(plan))
    with pytest.raises(EngineError, match="plan not found"):
        create_engine("tensorrt", weights=str(plan.with_name("nope.plan")))


def test_engine_without_cuda(plan, monkeypatch):
    _fake_trt(monkeypatch)
    _no_cuda(monkeypatch)
    with pytest.raises(EngineError) as err:
        create_engine("tensorrt", weights=str(plan), cuda_graph=True)
    msg = str(err.value)
    assert msg.startswith("no usable CUDA GPU") and "cuda-python: not installed" in msg
    assert "pycuda: not installed" in msg and "pip install cuda-python" in msg


def test_engine_with_cuda_python_but_no_driver(plan, monkeypatch):
    try:
        trt_engine._import_cudart()
    except ImportError:
        pytest.skip("cuda-python not installed")
    if trt_engine.cuda_device_name(0) is not None:
        pytest.skip("this machine has a GPU")
    _fake_trt(monkeypatch)
    with pytest.raises(EngineError, match="cuda-python: cudaGetDeviceCount failed: cuda"):
        trt_engine.TensorRTEngine(plan)


def test_engine_refuses_other_tensorrt_version_and_cpu(plan, monkeypatch):
    _fake_trt(monkeypatch, "10.13.0")
    Path(str(plan) + ".json").write_text(json.dumps({"tensorrt": {"module": "tensorrt", "version": "10.8.0"}}))
    with pytest.raises(EngineError, match="built with tensorrt 10.8.0 but 10.13.0 is installed"):
        trt_engine.TensorRTEngine(plan)
    with pytest.raises(EngineError, match="NVIDIA GPU.*got 'cpu'"):
        trt_engine.TensorRTEngine(plan, device="cpu")
    Path(str(plan) + ".json").write_text("{broken")
    with pytest.raises(EngineError, match="unreadable plan sidecar"):
        trt_engine.TensorRTEngine(plan)


def test_check_in_profile_names_the_range():
    prof = {"min": (1, 256, 256), "opt": (1, 512, 512), "max": (2, 2048, 1024)}
    trt_engine.check_in_profile((2, 256, 1024), prof)
    with pytest.raises(EngineError) as err:
        trt_engine.check_in_profile((1, 2056, 512), prof)
    msg = str(err.value)
    assert "1x2056x512" in msg and "height 2056" in msg
    assert "allowed: batch 1..2, height 256..2048, width 256..1024" in msg


# --------------------------------------------------------------------------- engine: execution logic
class FakeCuda:
    """Host memory standing in for a GPU: enough to run TensorRTEngine's buffer/graph logic."""

    name = "fake"
    supports_graphs = True

    def __init__(self):
        self.mem: dict[int, bytearray] = {}
        self.next = 4096
        self.mallocs = self.graph_launches = self.captures = 0

    def device_name(self):
        return "Fake GPU"

    def malloc(self, n):
        ptr, self.next = self.next, self.next + n + 4096
        self.mem[ptr] = bytearray(n)
        self.mallocs += 1
        return ptr

    def free(self, ptr):
        del self.mem[ptr]

    def stream(self):
        return "stream"

    def handle(self, stream):
        return 7

    def destroy_stream(self, stream):
        pass

    def htod(self, dst, src, stream):
        self.mem[dst][:src.nbytes] = src.tobytes()

    def dtoh(self, dst, src, stream):
        dst.ravel()[:] = np.frombuffer(bytes(self.mem[src][:dst.nbytes]), dst.dtype)

    def sync(self, stream):
        pass

    def capture(self, stream, fn):
        self.captures += 1
        fn()  # what the stream records (the fake just runs it)
        return fn  # "graph" = the recorded work

    def launch(self, graph, stream):
        self.graph_launches += 1
        graph()

    def destroy_graph(self, graph):
        pass

    def close(self):
        pass


def _fake_runtime_module(monkeypatch, profile=((1, 3, 64, 64), (1, 3, 128, 128), (2, 3, 256, 256))):
    mod = _fake_trt(monkeypatch)
    mod.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    mod.nptype = lambda dt: np.float32
    cuda = FakeCuda()

    class Context:
        def __init__(self):
            self.shapes, self.addr, self.enqueues = {}, {}, 0

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n, _, h, w = self.shapes["image"]
            return (n, 3, h, w)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            assert stream == 7
            self.enqueues += 1
            img_shape, mask_shape = self.shapes["image"], self.shapes["mask"]
            img = np.frombuffer(bytes(cuda.mem[self.addr["image"]][:4 * int(np.prod(img_shape))]), np.float32)
            mask = np.frombuffer(bytes(cuda.mem[self.addr["mask"]][:4 * int(np.prod(mask_shape))]), np.float32)
            out = img.reshape(img_shape) * (1 - mask.reshape(mask_shape)) + 0.25 * mask.reshape(mask_shape)
            cuda.mem[self.addr["output"]][:out.nbytes] = out.astype(np.float32).tobytes()
            return True

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return ("image", "mask", "output")[i]

        def get_tensor_mode(self, name):
            return "out" if name == "output" else "in"

        def get_tensor_dtype(self, name):
            return "float"

        def get_tensor_profile_shape(self, name, idx):
            return profile

        def create_execution_context(self):
            self.context = Context()
            return self.context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            self.engine = Engine()
            return self.engine

    mod.Runtime = Runtime
    logger = types.SimpleNamespace(errors=[], clear=lambda: None)
    monkeypatch.setattr(trt_engine, "get_logger", lambda trt: logger)
    monkeypatch.setattr(trt_engine, "load_cuda", lambda device: cuda)
    return cuda


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_execution_logic(plan, monkeypatch, cuda_graph):
    cuda = _fake_runtime_module(monkeypatch)
    eng = trt_engine.TensorRTEngine(plan, device="cuda:0", cuda_graph=cuda_graph)
    assert eng.profile == {"min": (1, 64, 64), "opt": (1, 128, 128), "max": (2, 256, 256)}
    rng = np.random.default_rng(0)
    img = rng.random((1, 3, 100, 130), dtype=np.float32)  # BaseEngine pads to 104x136
    mask = np.zeros((1, 1, 100, 130), np.float32)
    mask[..., 20:40, 30:90] = 1
    out = eng(img, mask)
    np.testing.assert_array_equal(out[mask.repeat(3, 1) > 0], 0.25)  # the fake network's fill
    np.testing.assert_array_equal(out[mask.repeat(3, 1) == 0], img[mask.repeat(3, 1) == 0])
    ctx = eng.context
    assert ctx.shapes["image"] == (1, 3, 104, 136) and cuda.mallocs == 3
    eng(img, mask)
    eng(img[..., :96, :96], mask[..., :96, :96])  # smaller: buffers reused (grow-only)
    assert cuda.mallocs == 3
    # batch 5 > profile max 2: run in chunks of 2, 2, 1
    big = rng.random((5, 3, 64, 64), dtype=np.float32)
    bmask = np.ones((5, 1, 64, 64), np.float32)
    np.testing.assert_array_equal(eng(big, bmask), 0.25)
    if cuda_graph:  # one capture per shape: 104x136, 96x96, 64x64 batch 2 and batch 1
        assert cuda.captures == 4 and cuda.graph_launches == 6
        # warm-up + captured enqueue per shape; the fake's replays re-run the recorded enqueue
        assert ctx.enqueues == 2 * cuda.captures + cuda.graph_launches
    else:
        assert cuda.captures == 0 and ctx.enqueues == 6
    with pytest.raises(EngineError, match=r"outside the engine's optimization profile \(height 512\).*"
                                          r"allowed: batch 1..2, height 64..256, width 64..256"):
        eng(np.zeros((1, 3, 512, 64), np.float32), np.ones((1, 1, 512, 64), np.float32))
    assert eng.describe()["gpu"] == "Fake GPU"
    eng.close()
    assert cuda.mem == {}
