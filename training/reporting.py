"""What a run reports: image grids, loss-term lists and validation records for logs and metadata."""

from __future__ import annotations

from typing import Any

import torch

from training.config import RunConfig


def image_grid(image: torch.Tensor, mask: torch.Tensor, pred: torch.Tensor, n: int = 4) -> torch.Tensor:
    """Rows of [input (holes grey) | mask | composite prediction | target], 3 x (n*H) x (4*W)."""
    image, mask, pred = image[:n].float().cpu(), mask[:n].float().cpu(), pred[:n].detach().float().cpu()
    inp = image * (1 - mask) + 0.5 * mask
    comp = mask * pred + (1 - mask) * image
    rows = [torch.cat([inp[i], mask[i].expand(3, -1, -1), comp[i], image[i]], dim=2) for i in range(len(image))]
    return torch.cat(rows, dim=1).clamp(0, 1)


LOSS_WEIGHTS = ("l1_known", "l1_missing", "adv", "r1", "fm", "pl", "recon", "tv", "ffl", "lama")


def loss_terms(cfg: RunConfig, perceptual_on: bool) -> dict[str, str]:
    """Human-readable on/off list of the loss weights (for logs and weight metadata)."""
    out = {}
    for k in LOSS_WEIGHTS:
        v = float(getattr(cfg.loss, k))
        out[k] = f"on ({v:g})" if v > 0 else "off (0)"
    if not perceptual_on:
        out["pl"] = ("off (no perceptual weights path given)" if cfg.loss.perceptual == "hrf"
                     else f"off (loss.perceptual={cfg.loss.perceptual})")
    if cfg.loss.perceptual != "recon":
        out["recon"] = "off (loss.perceptual is not recon)"
    else:
        out["recon"] += f", scales {list(cfg.loss.recon_scales)}"
    return out


def perceptual_note(cfg: RunConfig, perceptual_on: bool) -> str:
    """What stood in LaMa's perceptual slot, for logs and the weights' metadata."""
    if perceptual_on:
        return f"on ({cfg.perceptual_weights})"
    if cfg.loss.perceptual == "recon":
        norm = {"l1": "L1", "l2": "squared error"}[cfg.loss.recon_norm]
        return f"substitute: multi-scale hole {norm} (weight {cfg.loss.recon:g}, scales {list(cfg.loss.recon_scales)})"
    if cfg.loss.perceptual == "off":
        return "off (loss.perceptual=off)"
    return "off (no perceptual weights path given)"


def val_record(vals: dict[str, float]) -> dict[str, float]:
    """Validation numbers for the weights' metadata: ``psnr_<type>`` (whole composite) and
    ``val_hole/psnr_<type>`` (hole pixels only), rounded."""
    return {k.removeprefix("val/"): round(v, 3) for k, v in vals.items()}


def float_logs(logs: dict[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for k, v in (logs or {}).items():
        try:
            out[f"{prefix}{k}"] = float(v.detach().item() if torch.is_tensor(v) else v)
        except (TypeError, ValueError):
            continue
    return out
