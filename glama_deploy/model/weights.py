"""Generator weights: ``.safetensors`` with JSON metadata, and import of official LaMa checkpoints.

Official LaMa / big-lama ``best.ckpt`` files are PyTorch-Lightning checkpoints: the generator's
tensors sit under ``state_dict`` with the prefix ``generator.``, beside loss modules
(``loss_resnet_pl.*``) and sometimes a discriminator. They are read with
``torch.load(weights_only=True)``: no arbitrary code is unpickled. When that refuses the file
because it also pickles non-tensor objects (OmegaConf configs, paths, numpy scalars),
:mod:`.tensor_unpickler` reads it again with those objects as inert placeholders, which is just
as safe, and the metadata names what was skipped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..fsutil import atomic_output
from .generator import CONFIGS, Generator, GeneratorConfig
from .tensor_unpickler import load_tensors_only

log = logging.getLogger(__name__)

GENERATOR_PREFIX = "generator."
SAFETENSORS_EXT = (".safetensors",)
TORCH_EXT = (".ckpt", ".pth", ".pt", ".bin")


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def save_weights(model: Generator, path: str | os.PathLike, *, step: int | None = None,
                 source: str = "", extra: dict[str, Any] | None = None) -> Path:
    """Write the generator's state dict atomically as safetensors with metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "config": model.config.name,
        "generator_config": json.dumps(model.config.to_dict()),
        "blocks": str(model.config.n_blocks),
        "step": str(step if step is not None else -1),
        "source": source,
        "git_revision": git_revision(),
        "format": "glama-deploy/generator/v1",
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
    return state, meta


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    skipped: list[str] = []
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" not in msg:
            raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({msg})") from None
        try:
            obj, skipped = load_tensors_only(path)
        except Exception as e2:
            msg2 = str(e2).strip().splitlines()[0] if str(e2).strip() else type(e2).__name__
            raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True "
                               f"({msg}), nor with untrusted objects skipped ({msg2})") from None
        log.info("%s: skipped non-tensor objects without running them: %s", path, ", ".join(skipped))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    elif isinstance(obj, dict):
        state = obj
    else:
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    meta = {"source": f"imported from {path.name}"}
    if skipped:
        meta["skipped_objects"] = ", ".join(skipped)
    if isinstance(obj, dict) and "global_step" in obj:
        meta["step"] = str(obj["global_step"])
    return state, meta


def extract_generator_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Keep the generator's tensors: strip ``generator.`` when present, drop loss/discriminator keys."""
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if any(k.startswith(GENERATOR_PREFIX) for k in tensors):
        return {k[len(GENERATOR_PREFIX):]: v for k, v in tensors.items() if k.startswith(GENERATOR_PREFIX)}
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def extract_discriminator_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The ``discriminator.*`` tensors of a file's state (from :func:`read_state`), prefix stripped;
    {} when there are none (our safetensors hold a generator only). For fine-tuning from LaMa."""
    prefix = "discriminator."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and torch.is_tensor(v)}


def infer_config(state: dict[str, torch.Tensor], path: Path | str = "") -> GeneratorConfig:
    """Recover the architecture from tensor shapes (for checkpoints without our metadata)."""
    try:
        ngf = state["model.1.ffc.convl2l.weight"].shape[0]
    except KeyError:
        raise WeightsError(f"{path}: no generator weights found (expected keys like "
                           "'model.1.ffc.convl2l.weight' or 'generator.model.1.ffc.convl2l.weight')") from None
    nd = 0
    while f"model.{2 + nd}.ffc.convl2l.weight" in state or f"model.{2 + nd}.ffc.convl2g.weight" in state:
        nd += 1
    first_block = 2 + nd
    n_blocks = 0
    while f"model.{first_block + n_blocks}.conv1.ffc.convl2l.weight" in state:
        n_blocks += 1
    for cfg in CONFIGS.values():
        if (cfg.ngf, cfg.n_downsampling, cfg.n_blocks) == (ngf, nd, n_blocks):
            return cfg
    return GeneratorConfig("custom", ngf=ngf, n_downsampling=nd, n_blocks=n_blocks)


def read_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Return (the file's whole state dict, as stored, metadata) from a safetensors or LaMa checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in SAFETENSORS_EXT:
        return _read_safetensors(path)
    if path.suffix in TORCH_EXT:
        return _read_torch(path)
    raise WeightsError(f"{path}: unknown weights format '{path.suffix}' "
                       f"(use {', '.join(SAFETENSORS_EXT + TORCH_EXT)})")


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return (generator state dict without prefix, metadata) from a safetensors or LaMa checkpoint."""
    state, meta = read_state(path)
    return extract_generator_state(state), meta


def config_from_metadata(meta: dict[str, str]) -> GeneratorConfig | None:
    if "generator_config" in meta:
        return GeneratorConfig(**json.loads(meta["generator_config"]))
    if meta.get("config") in CONFIGS:
        return CONFIGS[meta["config"]]
    return None


def state_dict_problems(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                        optional: tuple[str, ...] = ()) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``state`` against ``own``, as short phrases
    (keys ending with one of ``optional`` may be missing). Empty when ``state`` fits."""
    missing = sorted(k for k in set(own) - set(state) if not k.endswith(optional or ("\0",)))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" ... (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {few(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches: {few(shapes)}")
    return parts


def load_state_into(model: Generator, state: dict[str, torch.Tensor], path: Path | str = "") -> None:
    """Strict load with an error that lists missing, unexpected and mis-shaped keys."""
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise WeightsError(f"{path}: does not match generator '{model.config.name}': " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_generator(path: str | os.PathLike, config: str | GeneratorConfig | None = None,
                   device: str | torch.device = "cpu") -> tuple[Generator, dict[str, str]]:
    """Build the generator a weights file describes, load it strictly, return it in eval mode."""
    state, meta = read_weights(path)
    if config is None:
        cfg = config_from_metadata(meta) or infer_config(state, path)
    else:
        cfg = config
    model = Generator(cfg)
    load_state_into(model, state, path)
    return model.to(device).eval(), meta
