"""PatchGAN discriminator used by LaMa/GLaMa training.

Layout (REFERENCE.md section 2; module names as LaMa's ``NLayerDiscriminator`` in
``saicinpainting/training/modules/pix2pixhd.py``, so a LaMa discriminator state dict with the
``discriminator.`` prefix stripped loads as is)::

    model0: Conv2d(3->64, k4, s2, p2) LeakyReLU(0.2)
    model1: Conv2d(64->128, k4, s2, p2) BN LeakyReLU      (n_layers - 1 stride-2 blocks,
    model2: Conv2d(128->256, ...)                         channels doubling, capped at 512)
    model3: Conv2d(256->512, ...)
    model4: Conv2d(512->512, k4, s1, p2) BN LeakyReLU
    model5: Conv2d(512->1, k4, s1, p2)                    -> patch logits

Keys: ``model0.0.weight``, ``model1.0.weight``, ``model1.1.running_mean``, ..., ``model5.0.bias``.
6,962,369 parameters at the defaults.
"""

from __future__ import annotations

import torch
from torch import nn

KERNEL = 4
PADDING = 2  # LaMa: int(ceil((kernel - 1) / 2))


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``forward(x) -> (logits (B,1,h,w), [outputs of the n_layers + 1 feature blocks])``."""

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 4) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        blocks: list[list[nn.Module]] = [[
            nn.Conv2d(input_nc, ndf, KERNEL, stride=2, padding=PADDING),
            nn.LeakyReLU(0.2, inplace=True),
        ]]
        nf = ndf
        for _ in range(1, n_layers):
            nf_prev, nf = nf, min(nf * 2, 512)
            blocks.append([
                nn.Conv2d(nf_prev, nf, KERNEL, stride=2, padding=PADDING),
                nn.BatchNorm2d(nf),
                nn.LeakyReLU(0.2, inplace=True),
            ])
        nf_prev, nf = nf, min(nf * 2, 512)
        blocks.append([
            nn.Conv2d(nf_prev, nf, KERNEL, stride=1, padding=PADDING),
            nn.BatchNorm2d(nf),
            nn.LeakyReLU(0.2, inplace=True),
        ])
        blocks.append([nn.Conv2d(nf, 1, KERNEL, stride=1, padding=PADDING)])
        for i, layers in enumerate(blocks):
            setattr(self, f"model{i}", nn.Sequential(*layers))
        self.num_blocks = len(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats: list[torch.Tensor] = []
        for i in range(self.num_blocks):
            x = getattr(self, f"model{i}")(x)
            feats.append(x)
        return feats[-1], feats[:-1]


def build_discriminator(input_nc: int = 3, ndf: int = 64, n_layers: int = 4) -> NLayerDiscriminator:
    """LaMa's default discriminator (``input_nc 3, ndf 64, n_layers 4``)."""
    return NLayerDiscriminator(input_nc=input_nc, ndf=ndf, n_layers=n_layers)
