"""Real 2-D Fourier transforms for the FourierUnit, in two interchangeable backends.

``fft``     torch.fft.rfftn / irfftn (training and eager inference; fastest in torch).
``matmul``  the same transforms as matrix products with cos/sin bases. The bases are built
            *inside the graph from the runtime shape* (Range -> Mul -> Mod -> Cos/Sin), so an
            exported ONNX model keeps H and W symbolic and contains no DFT op: TensorRT (< 11.2)
            and onnxruntime's CUDA EP have no DFT kernel.

Both compute ``norm='ortho'`` transforms, return the spectrum as a (real, imag) pair of shape
(B, C, H, W//2+1), and hold no parameters, so switching backend never changes weights.
"""

from __future__ import annotations

import math

import torch

BACKENDS = ("fft", "matmul")


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown spectral backend {backend!r}; choose one of {BACKENDS}")


def _angles(n_rows, n_cols, period, device: torch.device) -> torch.Tensor:
    """2*pi*((r*c) mod period)/period for r < n_rows, c < n_cols, computed exactly.

    The integer product is reduced modulo ``period`` *before* it becomes a float: float32 angles
    of size 2*pi*W*W/2 lose ~1e-3 rad at W=2048, which is far above our parity budget.
    Only tensor arithmetic is used (no Python ``%`` on a symbolic size), so it exports.
    """
    r = torch.arange(n_rows, dtype=torch.int64, device=device)
    c = torch.arange(n_cols, dtype=torch.int64, device=device)
    prod = r[:, None] * c[None, :]
    reduced = prod - torch.div(prod, period, rounding_mode="floor") * period
    return reduced.to(torch.float32) * (2.0 * math.pi) / _as_float(period, device)


def _as_float(n, device: torch.device) -> torch.Tensor:
    """A (possibly symbolic) size as a 0-d float tensor. ``math.sqrt(n)`` or ``1 / n`` on a
    symbolic size would specialise the export to the example shape; tensor ops keep it dynamic."""
    return torch.ones((), dtype=torch.float32, device=device) * n


def rfft2(x: torch.Tensor, backend: str = "fft") -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal real FFT over the last two dims -> (real, imag), each (..., H, W//2+1)."""
    _check(backend)
    x = x.float()
    if backend == "fft":
        spec = torch.fft.rfftn(x, dim=(-2, -1), norm="ortho")
        return spec.real, spec.imag
    h, w = x.shape[-2], x.shape[-1]
    wf = w // 2 + 1
    # along W (real -> half spectrum): x @ (cos - i sin)
    ang_w = _angles(w, wf, w, x.device)  # (W, Wf)
    scale_w = torch.rsqrt(_as_float(w, x.device))
    re = torch.matmul(x, torch.cos(ang_w) * scale_w)
    im = -torch.matmul(x, torch.sin(ang_w) * scale_w)
    # along H (complex -> complex): (cos - i sin) @ (re + i im)
    ang_h = _angles(h, h, h, x.device)  # (H, H), symmetric
    scale_h = torch.rsqrt(_as_float(h, x.device))
    ch, sh = torch.cos(ang_h) * scale_h, torch.sin(ang_h) * scale_h
    out_re = torch.matmul(ch, re) + torch.matmul(sh, im)
    out_im = torch.matmul(ch, im) - torch.matmul(sh, re)
    return out_re, out_im


def irfft2(re: torch.Tensor, im: torch.Tensor, size: tuple, backend: str = "fft",
           like: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`rfft2` back to real (..., H, W) with ``size == (H, W)``.

    ``like`` is a tensor of the output's spatial shape; the matmul backend reads H and W from it
    so that they stay symbolic in an export (``size`` is used by the fft backend).
    """
    _check(backend)
    if backend == "fft":
        return torch.fft.irfftn(torch.complex(re, im), s=tuple(size), dim=(-2, -1), norm="ortho")
    if like is None:
        raise ValueError("the matmul backend needs `like` (a tensor of the output's H and W)")
    h, w = like.shape[-2], like.shape[-1]
    wf = re.shape[-1]
    # inverse along H (complex): (cos + i sin) @ (re + i im)
    ang_h = _angles(h, h, h, re.device)
    scale_h = torch.rsqrt(_as_float(h, re.device))
    ch, sh = torch.cos(ang_h) * scale_h, torch.sin(ang_h) * scale_h
    zr = torch.matmul(ch, re) - torch.matmul(sh, im)
    zi = torch.matmul(ch, im) + torch.matmul(sh, re)
    # inverse real along W: Hermitian bins counted twice except DC and (even W) Nyquist
    ang = _angles(wf, w, w, re.device)  # (Wf, W)
    k = torch.arange(wf, dtype=torch.int64, device=re.device)
    single = (k == 0) | (k * 2 == w)
    weight = torch.where(single, torch.ones_like(k), torch.full_like(k, 2)).to(torch.float32)
    weight = (weight * torch.rsqrt(_as_float(w, re.device)))[:, None]
    return torch.matmul(zr, torch.cos(ang) * weight) - torch.matmul(zi, torch.sin(ang) * weight)
