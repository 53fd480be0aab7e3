"""Measure training speed: the real training step (G + D updates, all loss terms) on real data.

    python -m training.speed --config training/configs/glama-tiny.yaml --set data.crop=256 \\
        --set optim.batch_size=4 --steps 3 --threads 1

Prints steps/s (wall clock) and CPU seconds per step (process time, which is what a busy shared
machine does not distort) after one warm-up step. Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.speed", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from training.config import ConfigError, load_config
    from training.data import DataError, StepBatchSampler, collate
    from training.train import Trainer

    torch.set_num_threads(args.threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(args.config, args.overrides + [f"train.out_dir={tmp}", f"train.threads={args.threads}"])
            tr = Trainer(cfg)
            sampler = StepBatchSampler(len(tr.dataset), cfg.optim.batch_size, cfg.train.seed, 0, args.steps + 1)
            batches = [collate([tr.dataset[k] for k in keys]) for keys in sampler]
            tr.G.train()
            tr.D.train()
            tr.train_step(batches[0])  # warm-up
            wall, cpu = time.perf_counter(), time.process_time()
            for b in batches[1:]:
                tr.train_step(b)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = args.steps
    print(json.dumps({"model": cfg.model.name, "disc_ndf": cfg.model.disc_ndf, "batch": cfg.optim.batch_size,
                      "crop": cfg.data.crop, "threads": args.threads, "device": str(tr.device), "steps": n,
                      "steps_per_s": round(n / wall, 4), "s_per_step_wall": round(wall / n, 3),
                      "cpu_s_per_step": round(cpu / n, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
