"""High-receptive-field perceptual loss (LaMa's ``ResNetPL``): ADE20k ResNet50-dilated features.

The encoder is the CSAIL semantic-segmentation ``resnet50dilated`` (as vendored by LaMa in
``models/ade20k``): deep stem (conv1 3->64 s2, conv2 64->64, conv3 64->128, each 3x3 + BN + ReLU,
then maxpool 3/2), Bottleneck layers [3, 4, 6, 3]; layer3 and layer4 lose their stride and are
dilated by 2 and 4 (first block of each: dilation 1 and 2), so the output stride is 8.
Module names match the official ``ade20k-resnet50dilated-ppm_deepsup/encoder_epoch_20.pth``
(``conv1.weight``, ``bn1.running_mean``, ``layer1.0.conv1.weight``,
``layer1.0.downsample.0.weight``, ...; no ``fc``). That file cannot be downloaded here: pass a
local path (the file, or a LaMa-style weights directory holding it).

Loss (as LaMa): inputs in [0,1] are normalised with ImageNet mean/std, and
``sum over layer1..layer4 outputs of F.mse_loss(pred_feat, target_feat)`` (mean reduction per
layer, summed over the 4 layers). The weight (lambda_PL) is applied by the caller
(:class:`training.losses.JointLoss`). The encoder is frozen and always in eval mode, also when the
parent module is put in train mode (BatchNorm uses the ADE20k running statistics).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from glama_deploy.model.weights import WeightsError, state_dict_problems

LOG = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFFICIAL_NAME = "encoder_epoch_20.pth"
# Where LaMa keeps the file below its weights directory (ModelBuilder.get_encoder).
_DIR_CANDIDATES = (
    Path("ade20k") / "ade20k-resnet50dilated-ppm_deepsup" / OFFICIAL_NAME,
    Path("ade20k-resnet50dilated-ppm_deepsup") / OFFICIAL_NAME,
    Path(OFFICIAL_NAME),
)
_PREFIXES = ("loss_resnet_pl.impl.", "module.")  # LaMa training .ckpt / DataParallel


class Bottleneck(nn.Module):
    """ResNet bottleneck (stride and dilation on the 3x3 conv), names as torchvision/CSAIL."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Dilated(nn.Module):
    """ADE20k ResNet50-dilated encoder (output stride 8); ``forward`` returns layer1..layer4 outputs."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.relu3 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self._inplanes = 128
        self.layer1 = self._make_layer(64, layers[0], stride=1, dilation=1)
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilation=1)
        # CSAIL's _nostride_dilate: the strided block loses its stride and gets dilation d // 2,
        # the other blocks get dilation d (d = 2 for layer3, 4 for layer4).
        self.layer3 = self._make_layer(256, layers[2], stride=1, dilation=2, strided=True)
        self.layer4 = self._make_layer(512, layers[3], stride=1, dilation=4, strided=True)

    def _make_layer(self, planes: int, blocks: int, stride: int, dilation: int,
                    strided: bool = False) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or strided or self._inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self._inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        first_dilation = max(1, dilation // 2) if strided else dilation
        seq = [Bottleneck(self._inplanes, planes, stride, first_dilation, downsample)]
        self._inplanes = out
        seq += [Bottleneck(out, planes, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _resolve(path: Path) -> Path:
    if path.is_dir():
        for rel in _DIR_CANDIDATES:
            if (path / rel).is_file():
                return path / rel
        raise WeightsError(f"{path}: directory holds no {OFFICIAL_NAME} (looked for "
                           + ", ".join(str(r) for r in _DIR_CANDIDATES) + ")")
    if not path.is_file():
        raise WeightsError(f"{path}: perceptual-loss weights file not found")
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/safetensors errors come in many types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: cannot be read as encoder weights with weights_only=True ({msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_encoder(path: str | Path) -> ResNet50Dilated:
    """Build the encoder and load ``path`` strictly (every key and shape must match; files without
    BatchNorm ``num_batches_tracked`` counters, saved by old PyTorch, are accepted)."""
    path = _resolve(Path(path))
    state = _read_state(path)
    with torch.device("meta"):  # no random init of 23.6M weights that are overwritten anyway
        enc = ResNet50Dilated()
    own = enc.state_dict()
    problems = state_dict_problems(own, state, optional=("num_batches_tracked",))
    if problems:
        raise WeightsError(f"{path}: not an ADE20k ResNet50-dilated encoder state dict: " + "; ".join(problems))
    for k in own:
        if k not in state:  # num_batches_tracked only
            state[k] = torch.zeros((), dtype=torch.long)
    enc.load_state_dict(state, strict=True, assign=True)
    return enc


class ResNetPL(nn.Module):
    """Frozen HRF perceptual loss: ``forward(pred, target)`` -> unweighted scalar (see module doc)."""

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        self.weights_path = str(weights_path)
        self.impl = load_encoder(weights_path)  # name as LaMa (``loss_resnet_pl.impl.*``)
        for p in self.impl.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> ResNetPL:
        super().train(mode)
        self.impl.eval()  # frozen BN statistics, whatever the parent's mode
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """layer1..layer4 outputs for an image batch in [0,1]."""
        x = (x - self.mean.to(x)) / self.std.to(x)
        return self.impl(x)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_feats = self.features(pred)
        with torch.no_grad():
            target_feats = self.features(target)
        return torch.stack([F.mse_loss(p, t) for p, t in zip(pred_feats, target_feats, strict=True)]).sum()


def build_perceptual(path: str | Path | None) -> ResNetPL | None:
    """``ResNetPL`` from a local weights path, or None (loss off; the caller logs it) when no path."""
    if path is None or str(path).strip() == "":
        return None
    pl = ResNetPL(path)
    LOG.info("HRF perceptual loss: ADE20k ResNet50-dilated from %s", pl.weights_path)
    return pl
