"""The prefill pyramid (glama_deploy/model/prefill.py) and generators that start from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glama_deploy.model import Generator, get_config
from glama_deploy.model.prefill import pyramid_fill
from tests.conftest import SAMPLES, load_rgb, make_model

PREFILL = get_config("tiny", ngf=16, n_downsampling=2, n_blocks=2, up_kernel=4, prefill=True)


def _photo(h: int = 128, w: int = 192) -> torch.Tensor:
    return torch.from_numpy(load_rgb(SAMPLES / "mate-dune.jpg", (h, w)).transpose(2, 0, 1)[None].copy())


def test_two_x_grid_is_bilinear_interpolation():
    """A nearest-neighbour x2 grid is filled by exact bilinear interpolation of the known pixels."""
    x = _photo()
    known = torch.zeros(1, 1, 128, 192)
    known[..., ::2, ::2] = 1
    f = pyramid_fill(x, known)
    # odd rows, even columns: mean of the pixels above and below
    assert torch.allclose(f[..., 1:-1:2, 0::2], 0.5 * (x[..., 0:-2:2, 0::2] + x[..., 2::2, 0::2]), atol=1e-6)
    # even rows, odd columns: left and right
    assert torch.allclose(f[..., 0::2, 1:-1:2], 0.5 * (x[..., 0::2, 0:-2:2] + x[..., 0::2, 2::2]), atol=1e-6)
    # odd rows, odd columns: the four diagonal neighbours
    diag = 0.25 * (x[..., 0:-2:2, 0:-2:2] + x[..., 0:-2:2, 2::2] + x[..., 2::2, 0:-2:2] + x[..., 2::2, 2::2])
    assert torch.allclose(f[..., 1:-1:2, 1:-1:2], diag, atol=1e-6)


def test_one_missing_row_is_the_mean_of_its_neighbours():
    x = _photo()
    known = torch.ones(1, 1, 128, 192)
    known[..., 40, :] = 0
    f = pyramid_fill(x, known)
    # the tent spreads a little along the row too: compare with the tent-weighted neighbours
    above, below = x[..., 39, 1:-1], x[..., 41, 1:-1]
    tent = lambda r: (r[..., :-2] + 2 * r[..., 1:-1] + r[..., 2:]) / 4  # noqa: E731
    assert torch.allclose(f[..., 40, 2:-2], 0.5 * (tent(above) + tent(below)), atol=1e-6)


def test_any_size_big_holes_and_edge_cases():
    for h, w in [(8, 8), (9, 17), (250, 333), (512, 40)]:
        x = torch.rand(2, 3, h, w)
        known = (torch.rand(2, 1, h, w) > 0.9).float()
        f = pyramid_fill(x, known)
        assert f.shape == x.shape and torch.isfinite(f).all() and f.min() >= 0 and f.max() <= 1
    # nothing known: grey; one known colour: that colour everywhere
    assert torch.allclose(pyramid_fill(torch.rand(1, 3, 64, 64), torch.zeros(1, 1, 64, 64)), torch.tensor(0.5))
    x = torch.zeros(1, 3, 300, 300)
    x[:, 0] = 0.8
    known = torch.zeros(1, 1, 300, 300)
    known[..., :4, :4] = 1  # a far corner: the hole is far larger than the coarsest level
    assert torch.allclose(pyramid_fill(x, known)[:, 0], torch.tensor(0.8), atol=1e-5)


def test_prefill_generator_starts_at_the_pyramid_fill_and_keeps_keys():
    """An untrained prefill generator returns the classical fill exactly (its last conv starts at
    zero), corrects only inside the hole once trained, and has the weight names and shapes of the
    same config without prefill."""
    torch.manual_seed(0)
    g = Generator(PREFILL).eval()
    plain = Generator(get_config(PREFILL, prefill=False))
    assert {k: v.shape for k, v in g.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    x = _photo()
    mask = torch.zeros(1, 1, 128, 192)
    mask[..., 30:90, 50:140] = 1
    base = (1 - mask) * x + mask * pyramid_fill(x, 1 - mask)
    with torch.no_grad():
        assert torch.allclose(g(x, mask), base.clamp(1e-3, 1 - 1e-3), atol=1e-6)
        torch.nn.init.normal_(g.model[-2].weight, std=0.2)  # as if trained: a real correction
        out = g(x, mask)
    hole, known = (mask > 0).expand_as(x), (mask == 0).expand_as(x)
    assert (out - base)[hole].abs().mean() > 0.01
    assert torch.allclose(out[known], x.clamp(1e-3, 1 - 1e-3)[known], atol=1e-6)  # known pixels untouched
    # the holes' content never reaches the output: only known pixels and the mask matter
    noisy = x.clone()
    noisy[hole] = torch.rand(int(hole.sum()))
    with torch.no_grad():
        assert torch.equal(g(noisy, mask), out)


@pytest.mark.parametrize("k", [3, 4])
def test_up_kernel_doubles_the_size(k):
    g = Generator(get_config("tiny", up_kernel=k)).eval()
    up = g.model[g.config.n_downsampling + g.config.n_blocks + 3]  # first ConvTranspose2d after the concat
    assert isinstance(up, torch.nn.ConvTranspose2d) and up.kernel_size == (k, k)
    with torch.no_grad():
        assert g(torch.rand(1, 3, 40, 56), torch.zeros(1, 1, 40, 56)).shape == (1, 3, 40, 56)
    with pytest.raises(ValueError, match="up_kernel"):
        Generator(get_config("tiny", up_kernel=5))


def test_prefill_generator_onnx_matches_torch_at_any_size(tmp_path):
    """The pyramid exports with symbolic H/W (its coarsest levels would otherwise be baked in)."""
    import onnxruntime as ort

    from export.onnx import export_onnx

    model = make_model(PREFILL)
    path = tmp_path / "prefill.onnx"
    export_onnx(model, path, parity_sizes=())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for h, w in [(8, 8), (256, 336), (64, 1000)]:
        x = load_rgb(SAMPLES / "plasma-path.jpg", (h, w)).transpose(2, 0, 1)[None].copy()
        m = (rng.random((1, 1, h, w)) > 0.6).astype(np.float32)
        got = sess.run(None, {"image": x, "mask": m})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x), torch.from_numpy(m)).numpy()
        assert np.abs(got - want).max() < 1e-4, (h, w)
        assert want[np.broadcast_to(m, want.shape) > 0].std() > 0.05  # a lively fill, not a constant
    # a fp16/bf16 TensorRT build keeps the pyramid in fp32: its mean colour sums every pixel
    import onnx

    from export.precision import node_infos, select_fp32_nodes

    nodes = node_infos(onnx.load(str(path)))
    chosen = select_fp32_nodes(nodes)
    sums = [n.name for n in nodes if n.op_type == "ReduceSum"]
    pools = [n.name for n in nodes if n.op_type == "AveragePool"]
    assert sums and pools and all(chosen.get(n) == "prefill" for n in sums + pools), chosen
