"""Training checkpoints: every RNG state, atomic writes, a safe reader that falls back.

``checkpoints/last.pt`` is written atomically (temp file, then rename); the checkpoint it replaces
is kept as ``previous.pt``. Resuming from a ``last.pt`` that cannot be read (a truncated copy, a
disk that filled up) falls back to the newest readable of ``previous.pt`` and the ``step-N.pt``
snapshots, and says so. Temp files of a write that was killed are removed at the next start.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glama_deploy.fsutil import atomic_output, atomic_write_bytes
from training.config import ConfigError

CKPT_NAME = "last.pt"
PREVIOUS_NAME = "previous.pt"
FORMAT = "glama-deploy/train-checkpoint/v1"
REQUIRED = ("step", "generator", "discriminator", "opt_g", "opt_d", "rng", "config")

log = logging.getLogger("training.train")


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_torch_save(obj: Any, path: Path) -> Path:
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_rotating(obj: Any, path: Path) -> Path:
    """Write ``path`` atomically; the file it replaces becomes ``previous.pt`` beside it."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
        if path.exists():
            os.replace(path, path.with_name(PREVIOUS_NAME))
    return path


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files left by a checkpoint write that was killed (one writer per run)."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
        log.warning("removed %s, left by a checkpoint write that was interrupted", p)
    return stale


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint; any problem is one ConfigError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"{path}: empty file (0 bytes), not a training checkpoint")
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # safetensors: 8-byte length, then JSON
        raise ConfigError(f"{path}: a weights file, not a training checkpoint; to start from these weights "
                          "use --set model.init_weights=PATH")
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise ConfigError(f"{path}: not a training checkpoint (not a PyTorch file)")
    try:
        ck = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        # torch's own message may advise weights_only=False, which would run code from the file:
        # never pass that on.
        why = "truncated or corrupt" if isinstance(e, (EOFError, RuntimeError)) and "weights_only" not in str(e) \
            else "it holds objects other than tensors and plain values, which are not loaded"
        raise ConfigError(f"{path}: not a readable training checkpoint ({why})") from None
    if not isinstance(ck, dict) or any(k not in ck for k in REQUIRED):
        found = ", ".join(sorted(map(str, ck))[:6]) if isinstance(ck, dict) else type(ck).__name__
        raise ConfigError(f"{path}: not a training checkpoint of python -m training.train (found {found}); "
                          "for weights use --set model.init_weights=PATH")
    return ck


def _fallbacks(path: Path) -> list[tuple[int | None, Path]]:
    """(step or None, file): ``previous.pt`` (step unknown until read), then the ``step-N.pt``
    snapshots beside ``path``, newest first."""
    snaps = []
    for p in path.parent.glob("step-*.pt"):
        m = re.fullmatch(r"step-(\d+)\.pt", p.name)
        if m:
            snaps.append((int(m.group(1)), p))
    prev = path.with_name(PREVIOUS_NAME)
    first = [(None, prev)] if path.name != PREVIOUS_NAME and prev.is_file() else []
    return first + sorted(snaps, reverse=True)


def load_checkpoint_with_fallback(path: str | Path) -> tuple[dict[str, Any], Path]:
    """``load_checkpoint(path)``, or, when ``path`` is a run's ``last.pt`` that cannot be read, the newest
    readable of ``previous.pt`` and the ``step-N.pt`` snapshots beside it (with a warning)."""
    path = Path(path)
    try:
        return load_checkpoint(path), path
    except ConfigError as first:
        if path.name != CKPT_NAME:
            raise
        best: tuple[dict[str, Any], Path] | None = None
        for step, cand in _fallbacks(path):
            if best is not None and step is not None and step <= int(best[0]["step"]):
                break  # snapshots come newest first: none of the rest can be newer
            try:
                ck = load_checkpoint(cand)
            except ConfigError:
                continue
            if best is None or int(ck["step"]) > int(best[0]["step"]):
                best = (ck, cand)
        if best is None:
            raise first from None
        ck, cand = best
        log.warning("%s; resuming from %s (step %d) instead", first, cand, int(ck["step"]))
        return ck, cand
