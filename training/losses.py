"""GLaMa's joint spatial and frequency loss (paper eq. 11)::

    L = a1 * L_TV + a2 * L_FFL + a3 * L_LaMa
    L_LaMa = L1_known(weighted) + lambda_adv * L_G + lambda_fm * L_fm + lambda_PL * L_PL

Defaults and their sources (:class:`LossConfig`):

===============  =======  =====================================================================
field            default  source
===============  =======  =====================================================================
l1_known         10       paper lambda_1 = 10; LaMa ``losses.l1.weight_known`` 10
l1_missing       0        LaMa ``losses.l1.weight_missing`` 0 (paper eq. 1: known pixels only)
adv              10       paper lambda_adv = 10; LaMa ``losses.adversarial.weight`` 10
r1               0.001    LaMa ``losses.adversarial.gp_coef`` 0.001 (paper lambda_P, no value)
fm               30       paper lambda_fm = 30.  LaMa's configs use 100 (feature_matching.weight)
pl               100      paper lambda_PL = 100. LaMa's configs use 30 (resnet_pl.weight)
tv               1        paper alpha_1 = 1 (sec. 3.3 and 4.2)
ffl              1        paper alpha_2 = 1
lama             1        paper alpha_3 = 1
ffl_alpha        1        paper eq. 9 alpha = 1; focal-frequency-loss default
tv_beta          2        paper eq. 10 beta = 2
perceptual       hrf      what fills LaMa's perceptual slot: ``hrf`` (the paper's HRF network,
                          needs ``perceptual_weights``), ``recon`` (the substitute below), ``off``
recon            10       weight of the substitute (ours; chosen on held-out photos)
recon_scales     1,2,4,8  its scales
===============  =======  =====================================================================

The substitute for the HRF perceptual loss (``perceptual: recon``), for everyone without the
ADE20k ``encoder_epoch_20.pth``: a multi-scale L1 on the holes of the composite,
``mean over s in recon_scales of |avgpool_s(comp) - avgpool_s(target)|`` weighted by the pooled
hole mask and normalised by it (a mean over hole pixels). At scale 1 it is L1 on the hole pixels;
at the coarser scales errors that do not average out -- a colour cast, a wrong brightness over a
large hole -- weigh more than pixel noise, which is the job the HRF loss's deep features do in
LaMa. Without any term inside the hole (LaMa sets the hole's L1 weight to 0), only the
adversarial, feature-matching and frequency terms would supervise it. Held-out comparison
against plain hole L1 and no substitute: training/README.md.

The paper prints lambda_PL = 100 and lambda_fm = 30; LaMa's shipped configs have them the other
way round (feature matching 100, perceptual 30). We default to the paper's numbers; set
``pl=30, fm=100`` for LaMa's.

Which image each term sees: every generator term uses the **raw prediction** (the generator
output before known pixels are pasted back). The paper defines x_hat as "the predicted image"
in eq. 1, where L1 is taken over the *unmasked* region, which is only non-zero for the raw
prediction, and eq. 8 uses the same x_hat for F_f; LaMa computes L1, adversarial, feature
matching and perceptual terms on ``predicted_image`` (raw), not on ``inpainted``. So FFL compares
the raw prediction's spectrum with the target's, and TV (eq. 10) is taken over the raw prediction.

Choices the paper leaves open (documented, configurable where it matters):

* TV reduction: eq. 10 writes a sum over pixels; with a1 = 1 a per-image sum at 256x256 would
  dwarf every other term, so the default is the mean over (batch, channel, pixel)
  (``tv_reduction="mean"``; ``"sum"`` sums over C,H,W and averages over the batch). Differences
  beyond the last row/column are 0 (replicate border), so for beta = 2 the sum is exactly
  sum(dx^2) + sum(dy^2).
* Feature matching: the paper says "based on L1", LaMa's code (which GLaMa keeps) uses MSE:
  mean over D's feature blocks of ``mse(fake_feat, real_feat)``; we follow LaMa.
* The discriminator loss is not scaled by lambda_adv nor a3 (LaMa: ``sum_discr_loss.mean()``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TV_REDUCTIONS = ("mean", "sum")
PERCEPTUAL = ("hrf", "recon", "off")


@dataclass
class LossConfig:
    """Every weight of the joint loss; 0 switches a term off (see the module doc for sources)."""

    l1_known: float = 10.0  # lambda_1: L1 weight on known pixels (weight inside the mean, as LaMa)
    l1_missing: float = 0.0  # L1 weight on hole pixels
    adv: float = 10.0  # lambda_adv: non-saturating generator loss
    r1: float = 0.001  # gp_coef: R1 gradient penalty on real images (discriminator loss)
    mask_as_fake_target: bool = True  # only hole positions of D(fake) are fake targets
    fm: float = 30.0  # lambda_fm (paper; LaMa configs: 100)
    pl: float = 100.0  # lambda_PL, HRF perceptual (paper; LaMa configs: 30); off without weights
    tv: float = 1.0  # alpha_1
    ffl: float = 1.0  # alpha_2
    lama: float = 1.0  # alpha_3, multiplies the whole LaMa part
    ffl_alpha: float = 1.0  # spectrum weight exponent (eq. 9)
    ffl_log_matrix: bool = False
    ffl_patch_factor: int = 1
    ffl_batch_matrix: bool = False
    ffl_ave_spectrum: bool = False
    tv_beta: float = 2.0  # eq. 10
    tv_reduction: str = "mean"  # "mean" | "sum" (see module doc)
    perceptual: str = "hrf"  # "hrf" | "recon" | "off" (see module doc)
    recon: float = 10.0  # weight of the multi-scale hole error when perceptual == "recon"
    recon_scales: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8])
    recon_norm: str = "l1"  # "l1" | "l2" (squared error: its gradient grows with the error)

    def __post_init__(self) -> None:
        if self.perceptual not in PERCEPTUAL:
            raise ValueError(f"loss.perceptual must be one of {PERCEPTUAL}, got {self.perceptual!r}")
        if self.recon_norm not in ("l1", "l2"):
            raise ValueError(f"loss.recon_norm must be 'l1' or 'l2', got {self.recon_norm!r}")
        if not self.recon_scales or any(int(s) != s or s < 1 for s in self.recon_scales):
            raise ValueError(f"loss.recon_scales must be integers >= 1, got {self.recon_scales!r}")
        for f in ("l1_known", "l1_missing", "adv", "r1", "fm", "pl", "tv", "ffl", "lama", "recon"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"loss.{f} must be a number >= 0, got {v!r}")
        if self.tv_reduction not in TV_REDUCTIONS:
            raise ValueError(f"loss.tv_reduction must be one of {TV_REDUCTIONS}, got {self.tv_reduction!r}")
        if int(self.ffl_patch_factor) != self.ffl_patch_factor or self.ffl_patch_factor < 1:
            raise ValueError(f"loss.ffl_patch_factor must be an integer >= 1, got {self.ffl_patch_factor!r}")
        if self.tv_beta <= 0:
            raise ValueError(f"loss.tv_beta must be > 0, got {self.tv_beta!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> LossConfig:
        """Build from a mapping; unknown keys are an error naming the valid ones."""
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown loss keys {unknown}; valid: {names}")
        return cls(**d)


# --------------------------------------------------------------------------- pure functions


def l1_known_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  weight_known: float = 10.0, weight_missing: float = 0.0) -> torch.Tensor:
    """LaMa's masked L1: ``mean(|pred - target| * ((1 - mask) * w_known + mask * w_missing))``."""
    weights = (1 - mask) * weight_known + mask * weight_missing
    return ((pred - target).abs() * weights).mean()


def multiscale_hole_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                       scales: list[int] | tuple[int, ...] = (1, 2, 4, 8), norm: str = "l1") -> torch.Tensor:
    """The HRF substitute: mean over ``scales`` of the L1 between the ``s x s`` average-pooled
    composite and target, weighted by the pooled hole mask and normalised by it.

    The composite (known pixels from the target) makes every difference come from the hole, so at
    a coarse scale an error that is the same over a block (a colour cast) keeps its size while
    noise averages out. A batch without holes gives 0.
    """
    comp = mask * pred + (1 - mask) * target
    terms = []
    for s in scales:
        s = int(s)
        p, t, m = (comp, target, mask) if s == 1 else (F.avg_pool2d(comp, s), F.avg_pool2d(target, s),
                                                        F.avg_pool2d(mask, s))
        d = (p - t).abs() if norm == "l1" else (p - t).square()
        terms.append((d * m).sum() / (m.sum() * p.shape[1]).clamp(min=1e-8))
    return torch.stack(terms).mean()


def adversarial_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss ``mean(softplus(-D(fake)))`` (unweighted; no mask, as LaMa)."""
    return F.softplus(-fake_logits).mean()


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Mask resized to a discriminator's output grid with nearest interpolation."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=tuple(size), mode="nearest")


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor, grad_scale: float = 1.0) -> torch.Tensor:
    """R1: mean over the batch of ``||d sum(D(real)) / d real||^2`` (graph kept for D's update).

    ``real_images`` must require grad and be the tensor ``real_logits`` were computed from.
    Returns 0 when autograd is off (e.g. validation under ``torch.no_grad``).
    ``grad_scale``: under mixed precision, the AMP loss scale. The inner backward pass runs on
    ``sum(D(real)) * grad_scale`` and its gradient is divided by it afterwards (in float32), as
    PyTorch's AMP recipe for gradient penalties does: without it, fp16 gradients of the logits with
    respect to the image underflow to 0 and the penalty silently vanishes.
    """
    if not torch.is_grad_enabled():
        return real_logits.new_zeros(())
    (grad,) = torch.autograd.grad(real_logits.sum() * grad_scale, real_images, create_graph=True)
    grad = grad.float() / grad_scale
    return grad.reshape(grad.shape[0], -1).pow(2).sum(dim=1).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, mask: torch.Tensor | None,
                       r1: torch.Tensor | float = 0.0, r1_coef: float = 0.001,
                       mask_as_fake_target: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Non-saturating discriminator loss with R1 (LaMa ``NonSaturatingWithR1``).

    ``mean(softplus(-D(real))) + r1_coef * r1 + mean(m * softplus(D(fake)) + (1 - m) * softplus(-D(fake)))``
    with ``m`` the hole mask resized (nearest) to D's output when ``mask_as_fake_target``: only
    hole positions of the prediction count as fake; known positions (copied from the real image
    after compositing) count as real. Without it every fake position is fake.
    Returns ``(total, {"real", "fake", "r1"})`` where ``r1`` is already multiplied by ``r1_coef``.
    """
    real = F.softplus(-real_logits).mean()
    if mask_as_fake_target:
        if mask is None:
            raise ValueError("mask_as_fake_target needs the hole mask")
        m = resize_mask(mask, fake_logits.shape[-2:])
        fake = (m * F.softplus(fake_logits) + (1 - m) * F.softplus(-fake_logits)).mean()
    else:
        fake = F.softplus(fake_logits).mean()
    gp = r1_coef * r1 if torch.is_tensor(r1) else real_logits.new_tensor(r1_coef * float(r1))
    return real + fake + gp, {"real": real, "fake": fake, "r1": gp}


def feature_matching_loss(fake_feats: list[torch.Tensor], real_feats: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the discriminator's feature blocks of ``mse(fake_feat, real_feat)`` (LaMa)."""
    if len(fake_feats) != len(real_feats) or not fake_feats:
        raise ValueError(f"feature lists differ or are empty ({len(fake_feats)} vs {len(real_feats)})")
    return torch.stack([F.mse_loss(f, r) for f, r in zip(fake_feats, real_feats, strict=True)]).mean()


def _to_patches(x: torch.Tensor, patch_factor: int) -> torch.Tensor:
    b, c, h, w = x.shape
    if h % patch_factor or w % patch_factor:
        raise ValueError(f"ffl_patch_factor {patch_factor} must divide the image size {h}x{w}")
    ph, pw = h // patch_factor, w // patch_factor
    # (B, C, P, ph, P, pw) -> (B, P*P, C, ph, pw), patches in row-major order
    x = x.reshape(b, c, patch_factor, ph, patch_factor, pw).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, patch_factor * patch_factor, c, ph, pw)


def focal_frequency_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, patch_factor: int = 1,
                         log_matrix: bool = False, batch_matrix: bool = False,
                         ave_spectrum: bool = False) -> torch.Tensor:
    """Focal frequency loss (Jiang et al. 2021; GLaMa eq. 8-9).

    ``F = fft2(patches, norm="ortho")`` in float32; ``d = |F_target - F_pred|``;
    ``w = d ** alpha`` (optionally ``log(w + 1)``), divided by its max per (sample, patch, channel)
    (or over the whole batch), NaN -> 0, clamped to [0, 1], detached;
    loss = ``mean(w * d**2)`` over batch, patches, channels and frequencies.
    """
    pf = _to_patches(pred.float(), patch_factor)
    tf = _to_patches(target.float(), patch_factor)
    fp = torch.fft.fft2(pf, norm="ortho")
    ft = torch.fft.fft2(tf, norm="ortho")
    if ave_spectrum:
        fp = fp.mean(dim=0, keepdim=True)
        ft = ft.mean(dim=0, keepdim=True)
    diff = fp - ft
    dist = diff.real.square() + diff.imag.square()
    with torch.no_grad():
        w = dist.sqrt() ** alpha
        if log_matrix:
            w = torch.log(w + 1.0)
        if batch_matrix:
            w = w / w.max()
        else:
            w = w / w.amax(dim=(-2, -1), keepdim=True)
        w = torch.nan_to_num(w, nan=0.0).clamp(0.0, 1.0)
    return (w * dist).mean()


def total_variation_loss(x: torch.Tensor, beta: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """GLaMa eq. 10: ``((x[i,j+1]-x[i,j])^2 + (x[i+1,j]-x[i,j])^2) ** (beta/2)`` per pixel.

    Differences past the last column/row are 0. ``reduction="mean"`` averages over
    (B, C, H, W); ``"sum"`` sums over (C, H, W) and averages over the batch. For beta < 2 an
    epsilon of 1e-8 keeps the gradient finite where the image is flat.
    """
    if reduction not in TV_REDUCTIONS:
        raise ValueError(f"reduction must be one of {TV_REDUCTIONS}, got {reduction!r}")
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    s = dx.square() + dy.square()
    if beta != 2:
        s = (s + 1e-8) ** (beta / 2)
    if reduction == "mean":
        return s.mean()
    return s.sum(dim=(1, 2, 3)).mean()


# --------------------------------------------------------------------------- joint loss

GEN_LOG_KEYS = ("gen_l1", "gen_adv", "gen_fm", "gen_pl", "gen_recon", "gen_lama", "gen_tv", "gen_ffl",
                "gen_total")
DISCR_LOG_KEYS = ("discr_real", "discr_fake", "discr_r1", "discr_total", "discr_real_out", "discr_fake_out")


def _check_shapes(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal (B,C,H,W)")
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != pred.shape[0] \
            or mask.shape[-2:] != pred.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} must be (B,1,H,W) matching pred {tuple(pred.shape)}")


class JointLoss(nn.Module):
    """GLaMa's joint loss around a discriminator and an optional perceptual network.

    ``generator_loss(pred, target, mask)`` and ``discriminator_loss(pred, target, mask)`` take the
    raw prediction (B,3,H,W) in [0,1], the ground truth, and the mask (B,1,H,W), 1 = hole, and
    return ``(loss, logs)``; ``logs`` always holds every key of ``GEN_LOG_KEYS`` /
    ``DISCR_LOG_KEYS`` as floats (0.0 for a term that is off). Generator logs are weighted
    contributions: ``gen_lama = gen_l1 + gen_adv + gen_fm + gen_pl + gen_recon`` and
    ``gen_total = gen_tv + gen_ffl + lama * gen_lama``.

    The discriminator is run (and its BatchNorm statistics updated) in both steps, as in LaMa.
    The generator loss backpropagates through D, so D's parameters receive gradients there:
    zero D's gradients before its own step (LaMa does the same; toggling ``requires_grad`` instead
    breaks a DDP-wrapped D that expects gradients for all its parameters).
    The perceptual network is a registered submodule (moved by ``.to``); it is frozen and stays
    in eval mode. The PL term runs only with ``cfg.perceptual == "hrf"`` and a network; the
    substitute (``gen_recon``) only with ``cfg.perceptual == "recon"``.
    """

    def __init__(self, cfg: LossConfig, discriminator: nn.Module, perceptual: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.discriminator = discriminator
        self.perceptual = perceptual

    def active_terms(self) -> list[str]:
        """Names of the generator terms that contribute (for a start-of-training log line)."""
        c = self.cfg
        on = {"l1": c.lama > 0 and (c.l1_known > 0 or c.l1_missing > 0), "adv": c.lama > 0 and c.adv > 0,
              "fm": c.lama > 0 and c.fm > 0, "pl": c.lama > 0 and c.pl > 0 and self._hrf_on(),
              "recon": c.lama > 0 and c.recon > 0 and c.perceptual == "recon",
              "tv": c.tv > 0, "ffl": c.ffl > 0}
        return [k for k, v in on.items() if v]

    def _hrf_on(self) -> bool:
        return self.cfg.perceptual == "hrf" and self.perceptual is not None

    def generator_loss(self, pred: torch.Tensor, target: torch.Tensor,
                       mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        _check_shapes(pred, target, mask)
        c = self.cfg
        zero = pred.new_zeros(())
        l1 = adv = fm = pl = recon = tv = ffl = zero
        if c.lama > 0:
            if c.l1_known > 0 or c.l1_missing > 0:
                l1 = l1_known_loss(pred, target, mask, c.l1_known, c.l1_missing)
            if c.adv > 0 or c.fm > 0:
                fake_logits, fake_feats = self.discriminator(pred)
                if c.adv > 0:
                    adv = c.adv * adversarial_generator_loss(fake_logits)
                if c.fm > 0:
                    with torch.no_grad():
                        _, real_feats = self.discriminator(target)
                    fm = c.fm * feature_matching_loss(fake_feats, real_feats)
            if c.pl > 0 and self._hrf_on():
                pl = c.pl * self.perceptual(pred, target)
            if c.recon > 0 and c.perceptual == "recon":
                recon = c.recon * multiscale_hole_l1(pred, target, mask, c.recon_scales, c.recon_norm)
        lama = l1 + adv + fm + pl + recon
        if c.tv > 0:
            tv = c.tv * total_variation_loss(pred, c.tv_beta, c.tv_reduction)
        if c.ffl > 0:
            ffl = c.ffl * focal_frequency_loss(pred, target, c.ffl_alpha, c.ffl_patch_factor, c.ffl_log_matrix,
                                               c.ffl_batch_matrix, c.ffl_ave_spectrum)
        total = tv + ffl + c.lama * lama
        vals = (l1, adv, fm, pl, recon, lama, tv, ffl, total)
        return total, {k: float(v.detach()) for k, v in zip(GEN_LOG_KEYS, vals, strict=True)}

    def discriminator_loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                           grad_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """``grad_scale``: the AMP loss scale, for R1's inner backward pass (see :func:`r1_penalty`)."""
        _check_shapes(pred, target, mask)
        c = self.cfg
        fake_in = pred.detach()
        real_in = target.detach()
        use_r1 = c.r1 > 0 and torch.is_grad_enabled()
        if use_r1:
            real_in = real_in.clone().requires_grad_(True)
        real_logits, _ = self.discriminator(real_in)
        fake_logits, _ = self.discriminator(fake_in)
        r1 = r1_penalty(real_logits, real_in, grad_scale) if use_r1 else 0.0
        total, parts = discriminator_loss(real_logits, fake_logits, mask, r1, c.r1, c.mask_as_fake_target)
        logs = {"discr_real": parts["real"], "discr_fake": parts["fake"], "discr_r1": parts["r1"],
                "discr_total": total, "discr_real_out": real_logits.mean(), "discr_fake_out": fake_logits.mean()}
        return total, {k: float(logs[k].detach()) for k in DISCR_LOG_KEYS}
