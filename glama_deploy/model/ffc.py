"""Fast Fourier Convolution blocks (Chi et al. 2020) as LaMa uses them.

Module and attribute names follow the official LaMa code so that state-dict keys match its
checkpoints exactly (``convl2l``, ``convg2g.fu.conv_layer``, ``bn_l`` ...).
A block's state is a pair ``(x_local, x_global)``; a side with zero channels is the int 0.
"""

from __future__ import annotations

import torch
from torch import nn

from .spectral import irfft2, rfft2


class FourierUnit(nn.Module):
    """Pointwise conv + BN + ReLU in the frequency domain (real and imaginary parts as channels)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)
        self.spectral_backend = "fft"  # plain attribute: not part of the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[0], x.shape[1]
        re, im = rfft2(x, self.spectral_backend)
        hf, wf = re.shape[-2], re.shape[-1]
        # channel 2c = Re(c), 2c+1 = Im(c), as LaMa's stack(dim=-1).permute(0, 1, 4, 2, 3)
        spec = torch.stack((re, im), dim=2).reshape(b, 2 * c, hf, wf)
        spec = self.relu(self.bn(self.conv_layer(spec)))
        spec = spec.reshape(b, -1, 2, hf, wf)
        out = irfft2(spec[:, :, 0], spec[:, :, 1], x.shape[-2:], self.spectral_backend, like=x)
        return out


class SpectralTransform(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.downsample = nn.Identity()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, 1, bias=False),
            nn.BatchNorm2d(out_channels // 2),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(out_channels // 2, out_channels // 2)
        self.conv2 = nn.Conv2d(out_channels // 2, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.downsample(x))
        return self.conv2(x + self.fu(x))


class FFC(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1,
                 padding_type: str = "reflect"):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError("FFC stride must be 1 or 2")
        in_cg = int(in_channels * ratio_gin)
        in_cl = in_channels - in_cg
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.ratio_gin, self.ratio_gout = ratio_gin, ratio_gout
        self.global_in_num = in_cg

        def conv(cin: int, cout: int) -> nn.Module:
            if cin == 0 or cout == 0:
                return nn.Identity()
            return nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation, bias=False,
                             padding_mode=padding_type)

        self.convl2l = conv(in_cl, out_cl)
        self.convl2g = conv(in_cl, out_cg)
        self.convg2l = conv(in_cg, out_cl)
        self.convg2g = nn.Identity() if in_cg == 0 or out_cg == 0 else SpectralTransform(in_cg, out_cg)

    def forward(self, x):
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        out_l, out_g = 0, 0
        if self.ratio_gout != 1:
            out_l = self.convl2l(x_l)
            if self.global_in_num:
                out_l = out_l + self.convg2l(x_g)
        if self.ratio_gout != 0:
            out_g = self.convl2g(x_l)
            if self.global_in_num:
                out_g = out_g + self.convg2g(x_g)
        return out_l, out_g


class FFC_BN_ACT(nn.Module):  # noqa: N801 - official name, kept for recognisability
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, ratio_gin: float,
                 ratio_gout: float, stride: int = 1, padding: int = 0, dilation: int = 1,
                 padding_type: str = "reflect"):
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, stride, padding,
                       dilation, padding_type)
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.bn_l = nn.BatchNorm2d(out_cl) if out_cl else nn.Identity()
        self.bn_g = nn.BatchNorm2d(out_cg) if out_cg else nn.Identity()
        self.act_l = nn.ReLU(inplace=True) if out_cl else nn.Identity()
        self.act_g = nn.ReLU(inplace=True) if out_cg else nn.Identity()
        self.has_local, self.has_global = bool(out_cl), bool(out_cg)

    def forward(self, x):
        x_l, x_g = self.ffc(x)
        if self.has_local:
            x_l = self.act_l(self.bn_l(x_l))
        if self.has_global:
            x_g = self.act_g(self.bn_g(x_g))
        return x_l, x_g


class FFCResnetBlock(nn.Module):
    def __init__(self, dim: int, ratio_gin: float, ratio_gout: float, padding_type: str = "reflect"):
        super().__init__()
        self.conv1 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, padding=1, padding_type=padding_type)
        self.conv2 = FFC_BN_ACT(dim, dim, 3, ratio_gin, ratio_gout, padding=1, padding_type=padding_type)

    def forward(self, x):
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        id_l, id_g = x_l, x_g
        x_l, x_g = self.conv2(self.conv1((x_l, x_g)))
        return id_l + x_l, id_g + x_g


class ConcatTupleLayer(nn.Module):
    """(local, global) -> one tensor, local channels first."""

    def forward(self, x):
        x_l, x_g = x if isinstance(x, tuple) else (x, 0)
        if not torch.is_tensor(x_g):
            return x_l
        if not torch.is_tensor(x_l):
            return x_g
        return torch.cat((x_l, x_g), dim=1)
