"""A classical hole fill the generator can start from: a normalized-convolution pyramid.

LaMa's generator has no skip connections: every output pixel is rebuilt from the 1/8-resolution
bottleneck, so a small network loses to plain interpolation on thin holes (one missing row in
four, a 2x nearest-neighbour grid). With ``GeneratorConfig.prefill`` the holes are first filled
by this pyramid and the network predicts a correction on top of it (see ``Generator.forward``).

The fill, for an image ``x`` and a known-pixel indicator ``k`` (1 = known):

* level 0 is the image; level l+1 is the 2x2 average of level l (an odd side first repeats its
  last row or column), applied to ``x * k`` and to ``k`` alike;
* at every level, ``x * k`` and ``k`` are blurred by a 3x3 tent (a one-pixel line between known
  rows gets half the tent's weight, each pixel of a 2x nearest-neighbour grid a quarter);
* from the coarsest level to the finest, a pixel takes the normalized convolution
  ``blur(x * k) / blur(k)`` where the blurred known weight is at least ``tau``, the upsampled
  coarser fill where it is 0, and a linear blend in between;
* below the coarsest level stands the mean colour of all known pixels (0.5 if none is known).

With ``tau <= 0.25`` a 2x grid is filled by exact bilinear interpolation and every-N-lines by
interpolation between the neighbouring rows. Measured in-hole PSNR on 21 held-out photos at short
side 256 (mean over two masks per photo and type) is above OpenCV's Telea on all seven NTIRE mask
types (see training/README.md). Only Conv, AveragePool, Concat, Slice, Resize, Div, Clip and ReduceSum: it exports to
ONNX with dynamic height and width and TensorRT builds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = 8
TAU = 0.1  # chosen on held-out photos against 0.15, 0.25, 0.35 (training/README.md)
_EPS = 1e-6


def _tent(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    t = torch.tensor([1.0, 2.0, 1.0], device=device, dtype=dtype)
    return (torch.outer(t, t) / 16.0)[None, None]


def _halve(x: torch.Tensor) -> torch.Tensor:
    """2x2 average with ceil semantics: repeat the last row and column, then floor-mode pooling.

    (Exact in ONNX too: ceil_mode pooling divides border windows differently across runtimes.)
    """
    x = torch.cat([x, x[:, :, -1:]], dim=2)
    x = torch.cat([x, x[:, :, :, -1:]], dim=3)
    return F.avg_pool2d(x, 2)


def pyramid_fill(image: torch.Tensor, known: torch.Tensor, levels: int = LEVELS, tau: float = TAU) -> torch.Tensor:
    """Fill ``image`` (B,C,H,W) where ``known`` (B,1,H,W) is 0; returns the fill everywhere.

    The caller composites: ``known * image + (1 - known) * fill``.
    """
    c = image.shape[1]
    k1 = _tent(image.device, image.dtype)
    kc = k1.expand(c, 1, 3, 3)
    num, den = image * known, known
    nums: list[torch.Tensor] = []
    dens: list[torch.Tensor] = []
    for _ in range(levels):
        nb = F.conv2d(num, kc, padding=1, groups=c)
        db = F.conv2d(den, k1, padding=1)
        nums.append(nb)
        dens.append(db)
        num, den = _halve(num), _halve(den)
    total = (image * known).sum(dim=(2, 3), keepdim=True)
    count = known.sum(dim=(2, 3), keepdim=True)
    fill = (total + 0.5 * _EPS) / (count + _EPS)  # (B,C,1,1): mean known colour, 0.5 when none is known
    for i in range(levels - 1, -1, -1):
        nb, db = nums[i], dens[i]
        if i < levels - 1:  # the coarsest level blends with the mean colour by broadcasting
            fill = F.interpolate(fill, size=nb.shape[-2:], mode="bilinear", align_corners=False)
        a = (db / tau).clamp(max=1.0)
        fill = a * (nb / db.clamp(min=_EPS)) + (1 - a) * fill
    return fill


class PyramidFill(nn.Module):
    """:func:`pyramid_fill` as a module (no weights): its nodes carry the scope ``PyramidFill`` in an
    ONNX export, which is how a low-precision TensorRT build keeps them in fp32 (the mean colour
    sums every pixel of the image: far beyond fp16's 65504 at 4K)."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image with its holes (``mask`` 1) filled; known pixels exact."""
        known = 1 - mask
        return known * image + mask * pyramid_fill(image, known)
