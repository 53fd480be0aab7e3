"""The graph rewrites around int8: the exact float rewrites before quantization (export.int8_graph)
and the CPU specialization of the symmetric QDQ file at load (glama_deploy.engines.qdq_cpu)."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import SAMPLES, load_rgb


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize(("k", "pad", "out_pad"), [(3, 1, 1), (4, 1, 0), (2, 0, 0), (6, 2, 0)])
def test_subpixel_weight_reproduces_conv_transpose(k, pad, out_pad):
    """Conv(K) + DepthToSpace(DCR) of the rewritten weight equals torch's conv_transpose2d."""
    import torch
    import torch.nn.functional as F

    from export.int8_graph import subpixel_weight

    g = torch.Generator().manual_seed(k)
    x = torch.randn(2, 5, 7, 9, generator=g, dtype=torch.float64)
    w = torch.randn(5, 3, k, k, generator=g, dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, stride=2, padding=pad, output_padding=out_pad)
    kernel, lead, trail = subpixel_weight(w.numpy(), pad)
    phases = F.conv2d(F.pad(x, (lead, trail, lead, trail)), torch.from_numpy(kernel))
    b, _, h, wd = phases.shape
    got = phases.reshape(b, 2, 2, 3, h, wd).permute(0, 3, 4, 1, 5, 2).reshape(b, 3, 2 * h, 2 * wd)  # DCR
    assert got.shape == ref.shape == (2, 3, 14, 18)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_rewrites_keep_the_generator_output(tiny_onnx, tmp_path):
    """BatchNorm folded after every FFC Add and the upsamplers made sub-pixel convs: same output."""
    import cv2
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from export.int8_graph import rewrite_for_int8

    pre = tmp_path / "pre.onnx"
    quant_pre_process(str(tiny_onnx), str(pre), skip_symbolic_shape=True)
    model = onnx.load(str(pre))
    before = {op: sum(n.op_type == op for n in model.graph.node) for op in ("BatchNormalization", "ConvTranspose")}
    ref = _session(model)
    done = rewrite_for_int8(model)
    assert done["subpixel_upsamplers"] == before["ConvTranspose"] > 0
    assert done["norm_folded_after_add"] > 0
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == \
        before["BatchNormalization"] - done["norm_folded_after_add"]
    assert not [n for n in model.graph.node if n.op_type == "ConvTranspose"]
    onnx.checker.check_model(model)
    img = np.ascontiguousarray(load_rgb(SAMPLES / "mate-dune.jpg", (96, 128)).transpose(2, 0, 1)[None])
    m = cv2.imread(str(SAMPLES / "mate-dune_mask.png"), cv2.IMREAD_GRAYSCALE)
    mask = (cv2.resize(m, (128, 96), interpolation=cv2.INTER_NEAREST) > 127).astype(np.float32)[None, None]
    feeds = {"image": img, "mask": mask}
    a, b = ref.run(None, feeds)[0], _session(model).run(None, feeds)[0]
    assert np.abs(a - b).max() < 1e-5


# ----------------------------------------------------------------------------- CPU specialization
def _qdq_model(middle: str, scale: float = 0.01):
    """x -> Q -> DQ -> middle -> Q -> DQ -> y, symmetric int8 (zero point 0), one scale."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(scale, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")]
    mid = {"Relu": helper.make_node("Relu", ["a"], ["b"]),
           "Pad": helper.make_node("Pad", ["a", "pads"], ["b"], mode="reflect")}[middle]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["a"]), mid,
             helper.make_node("QuantizeLinear", ["b", "s", "z"], ["bq"]),
             helper.make_node("DequantizeLinear", ["bq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_relu_folds_into_a_uint8_grid_of_twice_the_resolution():
    from glama_deploy.engines.qdq_cpu import specialize_for_cpu

    x = np.random.default_rng(0).uniform(-1.2, 1.2, (1, 2, 4, 5)).astype(np.float32)
    model = _qdq_model("Relu")
    plain = _session(model).run(None, {"x": x})[0]
    done = specialize_for_cpu(model)
    assert done["relus_folded"] == 1 and not [n for n in model.graph.node if n.op_type == "Relu"]
    got = _session(model).run(None, {"x": x})[0]
    relu = np.clip(x, 0, 127 * 0.01)
    assert np.abs(plain - relu).max() <= 0.005 + 1e-6  # int8: half a step of 0.01
    assert np.abs(got - relu).max() <= 0.0025 + 1e-6  # uint8 from 0: half a step of 0.005
    assert (got >= 0).all() and np.abs(got - relu).max() < np.abs(plain - relu).max()


def test_a_reflect_pad_runs_on_the_quantized_tensor_with_the_same_result():
    from glama_deploy.engines.qdq_cpu import specialize_for_cpu

    x = np.random.default_rng(1).uniform(-1, 1, (1, 2, 4, 5)).astype(np.float32)
    model = _qdq_model("Pad")
    plain = _session(model).run(None, {"x": x})[0]
    done = specialize_for_cpu(model)
    assert done["data_ops_in_int8"] == 1
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    assert producer[pad.input[0]] == "QuantizeLinear"  # pads uint8, not floats
    np.testing.assert_array_equal(_session(model).run(None, {"x": x})[0], plain)  # same grid: same values


def test_specialized_generator_grids(tiny_onnx, tmp_path):
    """On the quantized tiny generator: every activation grid becomes uint8; a tensor that is >= 0 by
    construction gets zero point 0 and half the scale, any other zero point 128 and the same scale;
    weights stay int8; Relus fold away."""
    import onnx

    from export.quantize import quantize_onnx
    from glama_deploy.engines.qdq_cpu import _nonnegative_tensors, specialize_for_cpu

    path = tmp_path / "tiny.int8.onnx"
    quantize_onnx(tiny_onnx, path, photos=sorted(SAMPLES.glob("*.jpg")), calib=2, size=64)
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    nonneg = _nonnegative_tensors(model)
    before = {n.name: (float(inits[n.input[1]]), n.input[0] in nonneg) for n in model.graph.node
              if n.op_type == "QuantizeLinear"}
    weights_dq = sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    relus = sum(n.op_type == "Relu" for n in model.graph.node)
    done = specialize_for_cpu(model)
    assert done["uint8_grids"] > 0 and done["relus_folded"] > 0 and done["data_ops_in_int8"] > 0
    assert sum(n.op_type == "Relu" for n in model.graph.node) == relus - done["relus_folded"]
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    kinds = set()
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        zp, scale = inits[n.input[2]], float(inits[n.input[1]])
        old_scale, positive = before[n.name]
        assert zp.dtype == np.uint8
        if int(zp) == 0:
            assert positive and scale == pytest.approx(old_scale / 2, rel=1e-6), n.name
        else:
            assert int(zp) == 128 and scale == old_scale, n.name
        kinds.add(int(zp))
    assert kinds == {0, 128}
    assert sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"
               and n.input[0] in inits and inits[n.input[0]].dtype == np.int8) == weights_dq
    onnx.checker.check_model(model)
