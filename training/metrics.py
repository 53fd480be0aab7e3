"""Image-quality metrics for validation and ``training.evaluate``.

- PSNR and SSIM are computed here, without extra packages. SSIM follows Wang et al. (2004):
  11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1, 'valid' window
  positions only, averaged over the RGB channels.
- LPIPS (Zhang et al. 2018, AlexNet variant "v0.1") and FID need pretrained networks that this
  project cannot download: they run only when the user gives local weight files
  (:func:`load_lpips`, :func:`load_fid_extractor`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn


class MetricWeightsError(ValueError):
    """Weights for LPIPS/FID missing or unusable; the message names the file."""


# ------------------------------------------------------------------------------------------ PSNR

def psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB of one image pair (any shape; values in [0, data_range]); 100 dB when identical."""
    p = torch.as_tensor(pred, dtype=torch.float64)
    t = torch.as_tensor(target, dtype=torch.float64)
    mse = torch.mean((p - t) ** 2).item()
    if mse <= 1e-20:
        return 100.0
    return float(10.0 * np.log10(data_range**2 / mse))


def psnr_batch(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR (dB) of (N,C,H,W) tensors in [0,1]."""
    mse = ((pred.double() - target.double()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


def hole_psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
              data_range: float = 1.0) -> float:
    """PSNR in dB over the hole pixels only (``mask`` HxW or broadcastable, nonzero = hole; images
    HxWxC or CxHxW with the mask broadcast over channels). The known pixels of a composite are
    exact and would only inflate the number by the known share of the image."""
    p = torch.as_tensor(pred, dtype=torch.float64)
    t = torch.as_tensor(target, dtype=torch.float64)
    m = torch.as_tensor(mask, dtype=torch.float64)
    if m.dim() == 2:
        m = m[..., None] if p.shape[-1] in (1, 3) and p.shape[:2] == m.shape else m[None]
    m = torch.broadcast_to(m != 0, p.shape)
    if not bool(m.any()):
        return 100.0
    mse = ((p - t)[m] ** 2).mean().item()
    if mse <= 1e-20:
        return 100.0
    return float(10.0 * np.log10(data_range**2 / mse))


def hole_psnr_batch(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR (dB) over the hole pixels of (N,C,H,W) tensors; mask (N,1,H,W), 1 = hole."""
    m = mask.double().expand_as(pred)
    se = (((pred.double() - target.double()) ** 2) * m).flatten(1).sum(1)
    mse = (se / m.flatten(1).sum(1).clamp_min(1)).clamp_min(1e-10)
    return 10.0 * torch.log10(1.0 / mse)


# ------------------------------------------------------------------------------------------ SSIM

def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0, win: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> float:
    """Mean SSIM of two HxW or HxWxC images (channels averaged). Images smaller than the window
    use a window of their size."""
    a = np.asarray(pred, dtype=np.float64)
    b = np.asarray(target, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    win = min(win, a.shape[0], a.shape[1])
    g = _gaussian_kernel(win, sigma)
    r = win // 2
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2

    def filt(x: np.ndarray) -> np.ndarray:
        y = cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
        h, w = x.shape[:2]  # keep only positions where the window lies inside the image
        return y[r:h - (win - 1 - r), r:w - (win - 1 - r)]

    vals = []
    for ch in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[:, :, ch]), np.ascontiguousarray(b[:, :, ch])
        mx, my = filt(x), filt(y)
        sxx = filt(x * x) - mx * mx
        syy = filt(y * y) - my * my
        sxy = filt(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * sxy + c2)
        den = (mx * mx + my * my + c1) * (sxx + syy + c2)
        vals.append(float(np.mean(num / den)))
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------- LPIPS

def _read_state(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise MetricWeightsError(f"{p}: weights file not found")
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(str(p))
            else:
                part = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - many loader error types
            raise MetricWeightsError(f"{p}: cannot be read as weights ({str(e).splitlines()[0]})") from None
        if isinstance(part, dict) and "state_dict" in part:
            part = part["state_dict"]
        if not isinstance(part, dict):
            raise MetricWeightsError(f"{p}: holds a {type(part).__name__}, not a state dict")
        state.update({k: v for k, v in part.items() if torch.is_tensor(v)})
    return state


class _NetLin(nn.Module):
    """One LPIPS head; the ``model`` attribute gives the lpips package's key ``lin{i}.model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 with the AlexNet trunk. State-dict keys: ``features.{0,3,6,8,10}.*`` (torchvision's
    ``alexnet`` file, e.g. ``alexnet-owt-7be5be79.pth``) and ``lin{0..4}.model.1.weight`` (the
    ``lpips`` package's ``weights/v0.1/alex.pth``)."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True),
        )
        for i, c in enumerate(self.CHANNELS):
            self.add_module(f"lin{i}", _NetLin(c))
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.taps = (1, 4, 7, 9, 11)  # ReLU outputs feeding the five linear heads

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample distance for (N,3,H,W) images in [0,1]."""
        fa, fb = self._feats(a), self._feats(b)
        d = 0
        for i, (x, y) in enumerate(zip(fa, fb, strict=True)):
            d = d + getattr(self, f"lin{i}")((x - y) ** 2).mean(dim=(2, 3))
        return d.flatten()


def load_lpips(spec: str) -> LPIPSAlex:
    """``spec``: one file, or several joined by commas, holding together the AlexNet trunk
    (``features.*``) and the linear heads (``lin*``)."""
    paths = [s for s in spec.split(",") if s.strip()]
    state = _read_state(paths)
    model = LPIPSAlex().eval()
    own = model.state_dict()
    want = {k for k in own if k not in ("shift", "scale")}
    missing = sorted(want - set(state))
    if missing:
        raise MetricWeightsError(f"{spec}: LPIPS weights lack {len(missing)} tensors (e.g. {missing[:3]}); "
                                 "give the AlexNet trunk and the lpips v0.1 alex heads, comma-separated")
    try:
        model.load_state_dict({k: state[k] for k in want}, strict=False)
    except RuntimeError as e:
        raise MetricWeightsError(f"{spec}: LPIPS weights do not fit ({str(e).splitlines()[0]})") from None
    return model


# ------------------------------------------------------------------------------------------- FID

def load_fid_extractor(path: str | Path) -> torch.jit.ScriptModule:
    """A TorchScript feature extractor mapping (N,3,H,W) float in [0,1] to (N,D) features, e.g. an
    InceptionV3 pool3 network (pytorch-fid's) saved with ``torch.jit.save``."""
    p = Path(path)
    if not p.is_file():
        raise MetricWeightsError(f"{p}: FID feature extractor not found")
    try:
        return torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as e:  # noqa: BLE001
        raise MetricWeightsError(f"{p}: not a TorchScript module ({str(e).splitlines()[0]})") from None


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (N,D): |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    if len(f1) < 2 or len(f2) < 2:
        return float("nan")
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))
