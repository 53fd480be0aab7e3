"""ONNX export: opset 17, dynamic batch/H/W, no DFT, checked, equal to torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from export.check import CheckError, check_model_file, check_ops
from export.check import main as check_main
from export.onnx import export_onnx
from export.onnx import main as export_main
from glama_deploy.engines.onnx_ import OnnxEngine
from glama_deploy.engines.torch_ import TorchEngine
from glama_deploy.model.weights import save_weights

from .conftest import SAMPLES, load_rgb, make_model


def test_graph_is_opset17_dynamic_and_dft_free(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {"image": ["batch", 3, "height", "width"], "mask": ["batch", 1, "height", "width"]}
    out = [d.dim_param or d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert out == ["batch", 3, "height", "width"]
    ops = check_model_file(tiny_onnx)
    assert "DFT" not in ops and ops["MatMul"] > 0 and ops["Cos"] > 0
    assert not (tiny_onnx.parent / (tiny_onnx.name + ".data")).exists(), "must be one self-contained file"


@pytest.mark.parametrize("hw", [(256, 256), (250, 333), (64, 1000), (17, 9)])
def test_onnx_equals_torch_at_any_size(tiny_onnx, tiny_model, hw):
    """One export serves every size (odd ones padded to /8 by the engine), batch 2."""
    rng = np.random.default_rng(hw[0])
    img = rng.random((2, 3, *hw), dtype=np.float32)
    mask = (rng.random((2, 1, *hw)) > 0.7).astype(np.float32)
    ref = TorchEngine(tiny_model)(img, mask)
    got = OnnxEngine(tiny_onnx, threads=2)(img, mask)
    assert ref[mask.repeat(3, axis=1) > 0].std() > 0.05  # the fill varies (conftest.liven)
    assert got.shape == img.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_lama_fourier_export_parity(tmp_path):
    """The full-size LaMa config: export + checks + parity at 256x256 and 248x336 inside export_onnx,
    then an odd size (250x333) through the engines."""
    model = make_model("lama-fourier", seed=3)
    report = export_onnx(model, tmp_path / "lf.onnx", parity_sizes=((256, 256),))
    assert report["parity_max_abs"]["256x256"] <= 1e-4
    img = load_rgb(SAMPLES / "plasma-path.jpg", (250, 333)).transpose(2, 0, 1)[None]
    mask = np.zeros((1, 1, 250, 333), np.float32)
    mask[..., 100:180, 120:260] = 1
    ref = TorchEngine(model)(img, mask)
    got = OnnxEngine(tmp_path / "lf.onnx")(img, mask)
    assert ref[0][:, mask[0, 0] > 0].std() > 0.05  # the fill varies (conftest.liven): a real comparison
    assert np.abs(got - ref).max() <= 1e-4


def test_cli_export_and_check(tmp_path, tiny_model, capfd):
    weights = save_weights(tiny_model, tmp_path / "t.safetensors")
    out = tmp_path / "cli.onnx"
    assert export_main(["--weights", str(weights), "--out", str(out), "--parity-sizes", "64x64"]) == 0
    assert out.is_file() and not list(tmp_path.glob(".export-*"))
    # quiet by default: one line, not the exporter's ~300 lines of chatter (they are behind --verbose)
    printed = capfd.readouterr()
    assert printed.out.strip().splitlines() == [printed.out.strip()] and printed.out.startswith("wrote "), printed
    assert printed.err.strip() == "", printed.err
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["spectral_backend"] == "matmul" and meta["source_weights"] == "t.safetensors"
    assert check_main([str(out), "--weights", str(weights), "--sizes", "64x64,56x72"]) == 0


def test_export_refuses_missing_weights(tmp_path, capsys):
    assert export_main(["--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "nope.safetensors: weights file not found" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_leaves_no_file(tmp_path, tiny_model, monkeypatch):
    """A failed check aborts the export and writes nothing."""
    import export.onnx as exp

    monkeypatch.setattr(exp, "parity", lambda *a, **k: {"64x64": 0.5})
    with pytest.raises(CheckError, match="parity failed"):
        exp.export_onnx(tiny_model, tmp_path / "bad.onnx", parity_sizes=((64, 64),))
    assert list(tmp_path.iterdir()) == []


def test_dft_graph_is_rejected():
    """The check that guards TensorRT compatibility really fires on a DFT node."""
    from onnx import TensorProto, helper

    node = helper.make_node("DFT", ["x"], ["y"], onesided=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 2])])
    with pytest.raises(CheckError, match="DFT"):
        check_ops(helper.make_model(graph))
    graph2 = helper.make_graph([helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,jk->ik")], "g",
                               graph.input, graph.output)
    with pytest.raises(CheckError, match="allow-list"):
        check_ops(helper.make_model(graph2))


def test_torch_fft_export_would_contain_dft():
    """Why the matmul backend exists: exporting the fft backend yields DFT ops."""
    from glama_deploy.model.spectral import rfft2

    class M(torch.nn.Module):
        def forward(self, x):
            return rfft2(x, "fft")[0]

    prog = torch.onnx.export(M(), (torch.rand(1, 1, 8, 8),), dynamo=True, opset_version=18, verbose=False)
    assert "DFT" in {n.op_type for n in prog.model_proto.graph.node}
