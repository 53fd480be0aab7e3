"""Refine-mode training helpers: the input a second-stage (refine) generator trains on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glama_deploy.model import Generator


@torch.no_grad()
def coarse_fill(coarse: Generator, image: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Refine-mode input: run the frozen coarse generator at 1/``factor`` resolution, upsample its
    composite bilinearly and put it into the holes (known pixels stay the original image)."""
    small = F.interpolate(image, scale_factor=1 / factor, mode="area")
    small_mask = (F.max_pool2d(mask, factor) > 0.5).float()  # a block with any hole pixel is a hole
    pred = coarse(small, small_mask).float()
    comp = small_mask * pred + (1 - small_mask) * small
    up = F.interpolate(comp, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return mask * up + (1 - mask) * image
