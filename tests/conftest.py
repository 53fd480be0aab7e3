"""Shared fixtures: the repo's sample photos, a seeded tiny generator, its ONNX export."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "glama_deploy" / "assets" / "samples"
DEFAULT_WEIGHTS = ROOT / "glama_deploy" / "assets" / "glama-tiny.safetensors"

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


def make_model(config: str = "tiny", seed: int = 0):
    from glama_deploy.model import build_generator

    torch.manual_seed(seed)
    return randomize_bn(build_generator(config), seed).eval()


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
