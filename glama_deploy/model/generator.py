"""The LaMa / GLaMa generator: an FFC-ResNet, one definition for training, export and every engine.

``model`` is an ``nn.Sequential`` whose indices equal those of LaMa's ``FFCResNetGenerator``, so
official checkpoints load without renaming (see :mod:`glama_deploy.model.weights`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from .ffc import FFC_BN_ACT, ConcatTupleLayer, FFCResnetBlock, FourierUnit
from .prefill import PyramidFill
from .spectral import BACKENDS

_LOGIT_EPS = 1e-3  # the base fill is clamped to [eps, 1 - eps] before its logit


@dataclass(frozen=True)
class GeneratorConfig:
    name: str
    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 9
    max_features: int = 1024
    ratio: float = 0.75  # global share of channels inside the residual blocks
    # LaMa zeroes the holes of its input. A two-stage *refine* model instead sees the coarse fill
    # in the holes, so it keeps them (same architecture and weight shapes).
    zero_holes: bool = True
    # Kernel of the decoder's stride-2 transposed convolutions: LaMa's 3 (output_padding 1) gives
    # each output pixel an uneven number of taps, a checkerboard the small configs show as a grid;
    # 4 (padding 1) gives every output pixel 2x2 taps.
    up_kernel: int = 3
    # Start from a classical fill: the holes of the input hold a normalized-convolution pyramid
    # fill (glama_deploy/model/prefill.py) instead of zeros, and the network's last layer adds a
    # correction to that fill's logit inside the hole. Same weight shapes and keys as without it.
    prefill: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


CONFIGS: dict[str, GeneratorConfig] = {
    "lama-fourier": GeneratorConfig("lama-fourier", n_blocks=9),
    "big-lama": GeneratorConfig("big-lama", n_blocks=18),
    # small enough to train on a 2-core CPU in an hour; same topology
    "tiny": GeneratorConfig("tiny", ngf=16, n_blocks=4),
    # the bundled default: a 1/4-resolution bottleneck of 128 channels (wider than the 4x4x3 = 48
    # values of the block it stands for; tiny's 1/8 one holds 128 for 192), no checkerboard
    # kernel, and a start from the pyramid fill. Trained on a CPU in hours (training/README.md).
    "small": GeneratorConfig("small", ngf=32, n_downsampling=2, n_blocks=6, up_kernel=4, prefill=True),
}


def get_config(name_or_cfg: str | GeneratorConfig | dict, **overrides) -> GeneratorConfig:
    """A named config (``tiny``, ``lama-fourier``, ``big-lama``), a dict, or a config; fields in
    ``overrides`` replace the named ones (e.g. ``zero_holes=False`` for a refine model)."""
    cfg = _lookup(name_or_cfg)
    return replace(cfg, **overrides) if overrides else cfg


def _lookup(name_or_cfg: str | GeneratorConfig | dict) -> GeneratorConfig:
    if isinstance(name_or_cfg, GeneratorConfig):
        return name_or_cfg
    if isinstance(name_or_cfg, dict):
        return GeneratorConfig(**name_or_cfg)
    try:
        return CONFIGS[name_or_cfg]
    except KeyError:
        raise ValueError(f"unknown generator config {name_or_cfg!r}; known: {sorted(CONFIGS)}") from None


class Generator(nn.Module):
    """Inputs: image (B,3,H,W) in [0,1] and mask (B,1,H,W), 1 = hole. Output: raw prediction in [0,1].

    H and W must be multiples of ``2**n_downsampling`` (8); :mod:`glama_deploy.io` pads.
    The caller composites known pixels back (``compose``); the raw prediction is what losses see.
    """

    def __init__(self, config: str | GeneratorConfig | dict = "lama-fourier"):
        super().__init__()
        cfg = get_config(config)
        self.config = cfg
        ngf, nd, mf = cfg.ngf, cfg.n_downsampling, cfg.max_features
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFC_BN_ACT(4, ngf, 7, 0.0, 0.0, padding=0),
        ]
        for i in range(nd):
            mult = 2**i
            ratio_gout = cfg.ratio if i == nd - 1 else 0.0
            layers.append(FFC_BN_ACT(min(mf, ngf * mult), min(mf, ngf * mult * 2), 3, 0.0, ratio_gout,
                                     stride=2, padding=1))
        feats = min(mf, ngf * 2**nd)
        layers += [FFCResnetBlock(feats, cfg.ratio, cfg.ratio) for _ in range(cfg.n_blocks)]
        layers.append(ConcatTupleLayer())
        for i in range(nd):
            mult = 2 ** (nd - i)
            cin, cout = min(mf, ngf * mult), min(mf, ngf * mult // 2)
            k = cfg.up_kernel
            if k not in (3, 4):
                raise ValueError(f"up_kernel must be 3 (LaMa) or 4, got {k}")
            layers += [nn.ConvTranspose2d(cin, cout, k, stride=2, padding=1, output_padding=4 - k),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7, padding=0), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        self.fill = PyramidFill() if cfg.prefill else None  # no weights: the state dict is unchanged
        if cfg.prefill:  # start exactly at the classical fill (a zero correction)
            with torch.no_grad():
                layers[-2].weight.zero_()
                layers[-2].bias.zero_()

    @property
    def multiple(self) -> int:
        """H and W must be divisible by this."""
        return 2**self.config.n_downsampling

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.config.prefill:
            if self.config.zero_holes:
                image = image * (1 - mask)
            return self.model(torch.cat([image, mask], dim=1))
        base = image  # a refine model (zero_holes False) starts from the coarse fill it is given
        if self.config.zero_holes:
            base = self.fill(image, mask)
        h = torch.cat([base, mask], dim=1)
        for layer in self.model[:-1]:  # everything but the final Sigmoid
            h = layer(h)
        b = base.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
        # The correction acts inside the hole only. Ungated, the known-pixel L1 (most of the image)
        # pushes the whole decoder towards a zero output, and it died there (last BatchNorm + ReLU
        # at 1e-4) within a few hundred steps: the model stayed the bare fill.
        return torch.sigmoid(torch.log(b / (1 - b)) + mask * h)

    def set_spectral_backend(self, backend: str) -> Generator:
        """Switch every FourierUnit between ``fft`` and ``matmul``; weights are untouched."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown spectral backend {backend!r}; choose one of {BACKENDS}")
        for m in self.modules():
            if isinstance(m, FourierUnit):
                m.spectral_backend = backend
        return self

    @property
    def spectral_backend(self) -> str:
        for m in self.modules():
            if isinstance(m, FourierUnit):
                return m.spectral_backend
        return "fft"


def build_generator(config: str | GeneratorConfig | dict = "lama-fourier") -> Generator:
    return Generator(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
