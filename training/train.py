"""Train a GLaMa / LaMa generator (inpaint) or a two-stage refine generator.

    python -m training.train --config training/configs/glama-tiny.yaml [--set k=v ...] [--resume CKPT]
    torchrun --nproc_per_node 2 -m training.train --config ...          # data-parallel

What a run writes under ``train.out_dir``: ``checkpoints/last.pt`` (G, D, both optimizers, AMP
scalers, step, python/numpy/torch RNG states, config; written atomically), ``tb/`` (TensorBoard
scalars for every loss term, lr, steps/s, validation PSNR, and image grids input/mask/pred/target),
``config.yaml``, ``summary.json`` and, at the end (or when stopped by the time budget, SIGINT or
SIGTERM), the generator as ``train.export_name`` (safetensors + metadata on how it was made).

Exact resume: a batch is a pure function of ``(seed, step)`` (see :mod:`training.data`) and the
checkpoint holds every stateful object, so a run stopped at step k and resumed reaches the same
weights (bit-identical on CPU) as an uninterrupted run.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its DistributedSampler share;
gradients of G and D are averaged with one ``all_reduce`` per model and step (backend nccl on GPU,
gloo on CPU) and BatchNorm buffers are broadcast from rank 0 after every step, which is what
``DistributedDataParallel`` does with ``broadcast_buffers=True``. The DDP wrapper itself is not
used because the discriminator's R1 penalty needs ``torch.autograd.grad`` with a double
backward, which DDP's reducer does not support, and because D runs several forwards (real, fake,
generator step) per backward. Rank 0 logs, validates, checkpoints and exports.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch.distributed as dist

from glama_deploy.model.weights import WeightsError
from training.checkpoint import load_checkpoint, load_checkpoint_with_fallback
from training.config import ConfigError, RunConfig, config_from_dict, dump_config, load_config
from training.data import DataError
from training.trainer import Trainer, coarse_fill

__all__ = ["Trainer", "coarse_fill", "main"]


# --------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train a GLaMa/LaMa inpainting generator (or a two-stage refine generator). "
                    "Run under torchrun for data-parallel training.",
        epilog="Example: python -m training.train --config training/configs/glama-tiny.yaml "
               "--set data.root=/path/photos --set train.steps=2000 --set train.threads=1")
    p.add_argument("--config", help="YAML run config (path, or a name from training/configs/). "
                                    "Without it, --resume uses the checkpoint's config.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field by dotted path, typed by the field (repeatable), "
                        "e.g. --set loss.ffl=2 --set train.steps=500")
    p.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint (checkpoints/last.pt)")
    p.add_argument("--export-only", action="store_true",
                   help="with --resume: write the generator weights of the checkpoint and exit")
    p.add_argument("--export-to", metavar="PATH", help="where --export-only writes the safetensors file")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    return p


def resolve(args: argparse.Namespace, checkpoint: dict | None = None) -> RunConfig:
    """The run config: --config, else the config of the --resume checkpoint (``checkpoint`` when
    the caller has read it already), with the --set overrides."""
    if args.config:
        return load_config(args.config, args.overrides)
    if args.resume:
        ck = checkpoint if checkpoint is not None else load_checkpoint(args.resume)
        cfg = config_from_dict(ck["config"])
        from training.config import apply_override

        for o in args.overrides:
            apply_override(cfg, o)
        return cfg.validate()
    return load_config(None, args.overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.WARNING if args.quiet or rank else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    command = "python -m training.train " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        checkpoint = None
        if args.resume:  # a last.pt that cannot be read falls back to previous.pt / step-N.pt, saying so
            checkpoint, path = load_checkpoint_with_fallback(args.resume)
            args.resume = str(path)
        cfg = resolve(args, checkpoint)
        if args.print_config:
            print(dump_config(cfg), end="")
            return 0
        if args.export_only:
            if not args.resume:
                raise ConfigError("--export-only needs --resume CKPT")
            cfg.train.threads = cfg.train.threads or 1
            trainer = Trainer(cfg, resume=args.resume, command=command, checkpoint=checkpoint)
            trainer.stop_reason = f"exported from checkpoint at step {trainer.step}"
            out = trainer.export(Path(args.export_to) if args.export_to else None)
            print(out)
            return 0
        trainer = Trainer(cfg, resume=args.resume, command=command, checkpoint=checkpoint)
        checkpoint = None  # the trainer holds what it needs; let the loaded copy go
        out = trainer.fit()
        if out is not None:
            print(out)
        return 0
    except (ConfigError, DataError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
