"""Data-parallel plumbing for the trainer: ranks, gradient averaging, buffer broadcast.

The DDP wrapper is not used (see :mod:`training.train`): gradients of G and D are averaged with one
flat ``all_reduce`` per model and step, and BatchNorm buffers are broadcast from rank 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import torch
import torch.distributed as dist

from training.config import ConfigError


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device_pref: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available")
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local), device


def allreduce_mean_grads(module: torch.nn.Module, d: Dist) -> None:
    """Average the gradients of ``module`` over ranks (one flat all_reduce)."""
    if not d.enabled:
        return
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= d.world
    off = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[off:off + n].view_as(p.grad))
        off += n


def broadcast_state(module: torch.nn.Module, d: Dist, buffers_only: bool = False) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) -- and parameters unless ``buffers_only``."""
    if not d.enabled:
        return
    tensors = list(module.buffers()) + ([] if buffers_only else [p.data for p in module.parameters()])
    for t in tensors:
        dist.broadcast(t, 0)


def state_checksum(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
