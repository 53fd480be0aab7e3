"""Refine-mode training helpers: the input a second-stage (refine) generator trains on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from glama_deploy.model import Generator


def downscale_known(image: torch.Tensor, mask: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's coarse-pass input (:func:`glama_deploy.pipeline.scaling.downscale`, rule
    "known") at 1/``factor``: a low-res pixel is a hole only where its whole cell is hole, and a
    known one holds the mean of its cell's known pixels (hole content never leaks in)."""
    known = 1 - mask
    kfrac = F.avg_pool2d(known, factor)
    small = F.avg_pool2d(image * known, factor) / kfrac.clamp_min(1e-6)
    small_mask = (kfrac <= 1e-6).float()
    return small * (1 - small_mask), small_mask


@torch.no_grad()
def coarse_fill(coarse: Generator, image: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Refine-mode input: run the frozen coarse generator at 1/``factor`` resolution on the
    pipeline's coarse input (:func:`downscale_known`), upsample its composite bilinearly and put
    it into the holes (known pixels stay the original image)."""
    small, small_mask = downscale_known(image, mask, factor)
    pred = coarse(small, small_mask).float()
    comp = small_mask * pred + (1 - small_mask) * small
    up = F.interpolate(comp, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return mask * up + (1 - mask) * image
