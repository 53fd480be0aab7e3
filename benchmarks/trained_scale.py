"""Seeded random generators whose activations have a trained network's magnitude ("trained-scale").

There are no real ``lama-fourier`` weights on a machine without internet. A plain random init is
useless for quantization and precision studies: PyTorch's default conv init shrinks activations
layer after layer, so the output is ~0.5 everywhere and any rounding looks harmless. The recipe is
the one of ``tests/test_tensorrt_gpu.py``: random BatchNorm statistics; convs outside the residual
blocks x sqrt(6) (He scale), those inside x1.5 (the residual stream grows to a few hundred through
lama-fourier's 18 blocks, as in a trained LaMa); the last conv set so the logits have std ~1.5 on a
photo (outputs span most of [0, 1]).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from glama_deploy.bundled import SAMPLES

RECIPE = ("trained-scale: seeded init, random BatchNorm statistics, convs x sqrt(6) outside the residual "
          "blocks and x1.5 inside, last conv scaled to logit std 1.5 on a photo (tests/test_tensorrt_gpu.py)")


def _photo(h: int = 256, w: int = 256):
    import cv2
    import torch

    rgb = cv2.imread(str(SAMPLES / "mate-dune.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1]
    rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    mask = np.zeros((1, 1, h, w), np.float32)
    mask[..., h // 4: h // 2, w // 3: 2 * w // 3] = 1
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])), torch.from_numpy(mask)


def trained_scale_model(config: str = "lama-fourier", seed: int = 0):
    """A generator in eval mode with trained-scale activations (see the module docstring)."""
    import torch

    from glama_deploy.model import build_generator
    from glama_deploy.model.ffc import FFCResnetBlock

    torch.manual_seed(seed)
    model = build_generator(config).eval()
    g = torch.Generator().manual_seed(seed)
    in_blocks = {id(m) for b in model.modules() if isinstance(b, FFCResnetBlock) for m in b.modules()}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(1.5 if id(m) in in_blocks else math.sqrt(6.0))
        final = model.model[-2]
        if not final.weight.any():  # prefill generators start with a zero correction
            torch.nn.init.kaiming_uniform_(final.weight, a=5**0.5)
        img, mask = _photo()
        seen = {}
        hook = final.register_forward_hook(lambda mod, i, o: seen.__setitem__("z", o))
        model(img, mask)
        hook.remove()
        z = seen["z"]
        k = 1.5 / float(z.std())
        final.weight.mul_(k)
        final.bias.sub_(z.mean(dim=(0, 2, 3))).mul_(k)
    return model


def trained_scale_weights(config: str, cache_dir: Path, seed: int = 0) -> Path:
    """The trained-scale generator written once as .safetensors into ``cache_dir`` (keyed by the
    model sources, so a change to the network makes a new file)."""
    import torch

    from benchmarks.engines import code_digest
    from glama_deploy.model.weights import save_weights

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{config}-trainedscale-seed{seed}-{code_digest('benchmarks/trained_scale.py')}.safetensors"
    if not path.is_file():
        torch.manual_seed(seed)
        save_weights(trained_scale_model(config, seed), path, source=f"benchmarks: {RECIPE}, seed {seed}")
    return path
