"""Shared fixtures: the repo's sample photos, a seeded tiny generator, its ONNX export."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from glama_deploy.bundled import DEFAULT_WEIGHTS, SAMPLES  # noqa: F401 (tests import them from here)

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so parity tests exercise every term."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
    return model


def liven(model: torch.nn.Module, logit_std: float = 1.5) -> torch.nn.Module:
    """Make a random generator behave numerically like a trained one.

    PyTorch's default conv init shrinks activations layer after layer: a random generator outputs
    0.5 +- 0.005 everywhere, so a parity check at 1e-4 on it is ~50x weaker than it looks. He-scaled
    convs (x sqrt(6)) keep activations at their size, as in a trained LaMa, and the last conv is
    scaled so the logits have std ``logit_std`` on a photo: outputs then span most of [0, 1].
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                m.weight.mul_(6**0.5)
        last = model.model[-2]
        if not last.weight.any():  # a prefill generator starts with a zero correction: give it one
            torch.nn.init.kaiming_uniform_(last.weight, a=5**0.5)
        img = torch.from_numpy(load_rgb(SAMPLES / "mate-dune.jpg", (64, 96)).transpose(2, 0, 1)[None].copy())
        mask = torch.zeros(1, 1, 64, 96)
        mask[..., 16:48, 24:72] = 1
        seen: list[torch.Tensor] = []
        hook = last.register_forward_hook(lambda _m, _i, out: seen.append(out))
        model(img, mask)
        hook.remove()
        scale = logit_std / seen[0].std().item()
        last.weight.mul_(scale)
        last.bias.mul_(scale)
    return model


def make_model(config: str = "tiny", seed: int = 0, lively: bool = True):
    """A seeded random generator in eval mode, with random BatchNorm statistics and (``lively``)
    trained-like activation scales: see :func:`liven`."""
    from glama_deploy.model import build_generator

    torch.manual_seed(seed)
    model = randomize_bn(build_generator(config), seed).eval()
    return liven(model) if lively else model


@pytest.fixture(scope="session")
def tiny_model():
    return make_model("tiny")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_model) -> Path:
    """The tiny model exported once per session (matmul DFT, dynamic shapes, all checks on)."""
    from export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_model, path, parity_sizes=())
    return path


@pytest.fixture(scope="session")
def sample_photo() -> tuple[Path, Path]:
    return SAMPLES / "mate-dune.jpg", SAMPLES / "mate-dune_mask.png"


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Sample photo as float32 HxWx3 in [0,1], optionally resized to (H, W)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    if size is not None:
        img = cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.float32) / 255.0
