"""The trainer behind ``python -m training.train``: one object per process, :meth:`Trainer.fit` runs the
loop (see :mod:`training.train` for what a run writes, exact resume and the distributed design)."""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from glama_deploy.errors import InputError
from glama_deploy.model import Generator
from glama_deploy.model.weights import (
    WeightsError,
    extract_discriminator_state,
    extract_generator_state,
    load_generator,
    load_state_into,
    read_state,
    save_weights,
    state_dict_problems,
)
from glama_deploy.weights import resolve_weights
from training.checkpoint import (
    CKPT_NAME,
    FORMAT,
    atomic_torch_save,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_rotating,
    set_rng_state,
)
from training.config import ConfigError, RunConfig, dump_config
from training.data import (
    InpaintingDataset,
    StepBatchSampler,
    ValidationSet,
    collate,
    find_images,
    split_holdout,
)
from training.distributed import (
    allreduce_mean_grads,
    broadcast_state,
    setup_distributed,
    state_checksum,
)
from training.metrics import hole_psnr_batch, psnr_batch
from training.refine import coarse_fill
from training.reporting import float_logs, image_grid, loss_terms, perceptual_note, val_record

log = logging.getLogger("training.train")

# ---------------------------------------------------------------------------------- helpers

def make_policy(spec):
    from training.masks import make_policy as _make

    return _make(spec)


# ---------------------------------------------------------------------------------- trainer

class Trainer:
    """One object per process; :meth:`fit` runs the loop."""

    def __init__(self, cfg: RunConfig, resume: str | Path | None = None, command: str = "",
                 checkpoint: dict[str, Any] | None = None):
        """``checkpoint``: the contents of ``resume`` when the caller has loaded them already."""
        from training.discriminator import NLayerDiscriminator
        from training.losses import JointLoss
        from training.perceptual import build_perceptual

        self.cfg = cfg
        self.command = command
        tc = cfg.train
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        self.d, self.device = setup_distributed(tc.device)
        self.amp = bool(tc.amp and self.device.type == "cuda")
        if tc.amp and not self.amp and self.d.main:
            log.warning("train.amp=true ignored: AMP is used only on CUDA (running on %s)", self.device)
        self.out = Path(tc.out_dir)
        self.refine = tc.mode == "refine"

        random.seed(tc.seed)
        np.random.seed(tc.seed % 2**32)
        torch.manual_seed(tc.seed)

        # ---- data
        roots = cfg.data_roots()
        paths = find_images(roots)
        if cfg.data.exclude:
            paths, self.excluded = split_holdout(paths, roots, cfg.data.exclude)
        else:
            self.excluded = []
        self.train_paths, self.val_paths = split_holdout(paths, roots, cfg.data.holdout)
        self.policy = make_policy(cfg.masks.policy)
        self.dataset = InpaintingDataset(self.train_paths, cfg.data.crop, self.policy, seed=tc.seed,
                                         min_scale=cfg.data.min_scale, hflip=cfg.data.hflip,
                                         cache_images=cfg.data.cache_images)

        # ---- models
        self.G = Generator(cfg.generator_config(zero_holes=not self.refine)).to(self.device)
        self.D = NLayerDiscriminator(ndf=cfg.model.disc_ndf, n_layers=cfg.model.disc_layers).to(self.device)
        self.perceptual = build_perceptual(cfg.perceptual_weights or None) if cfg.loss.perceptual == "hrf" else None
        self.perceptual_on = self.perceptual is not None
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(self.device)
        self.loss = JointLoss(cfg.loss, self.D, self.perceptual)
        if hasattr(self.loss, "to"):
            self.loss = self.loss.to(self.device)
        self.coarse: Generator | None = None
        if self.refine:
            try:
                self.coarse, _ = load_generator(cfg.refine.coarse_weights, device=self.device)
            except WeightsError as e:
                raise ConfigError(f"refine.coarse_weights: {e}") from None
            self.coarse.requires_grad_(False).eval()

        betas = tuple(cfg.optim.betas)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.optim.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.optim.lr_d, betas=betas)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=self.amp)

        self.init_note = ""
        if cfg.model.init_weights and not resume:
            self.init_note = self._init_from(cfg.model.init_weights)

        self.step = 0
        self.elapsed_before = 0.0  # wall-clock seconds of previous segments of this run
        self.commands: list[str] = []  # command lines of previous segments (resumes)
        if resume:
            self._load(resume, checkpoint)
        broadcast_state(self.G, self.d)
        broadcast_state(self.D, self.d)

        self.val = None
        if self.d.main and self.val_paths:
            from training.masks import MASK_TYPES

            self.val = ValidationSet(self.val_paths, cfg.masks.val_size, list(MASK_TYPES), make_policy,
                                     per_type=cfg.masks.val_per_type, seed=cfg.masks.val_seed)
        self.writer = None
        self.stop_reason = ""
        self.last_logs: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        if hasattr(self, "_resumed_logs"):
            self.last_logs, self.last_val = self._resumed_logs

    # ------------------------------------------------------------------ checkpoint io
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "step": self.step,
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
            "world_size": self.d.world,
            "commands": self.commands + [self.command],
            "init": self.init_note,
            "last_logs": self.last_logs,
            "last_val": self.last_val,
            "elapsed_s": self.elapsed_before + (time.time() - self.t_start if hasattr(self, "t_start") else 0),
        }

    def save_checkpoint(self) -> Path | None:
        if not self.d.main:
            return None
        ck = self._checkpoint()
        keep = self.cfg.train.keep_every
        if keep and self.step % keep == 0:
            atomic_torch_save(ck, self.out / "checkpoints" / f"step-{self.step}.pt")
        return save_rotating(ck, self.out / "checkpoints" / CKPT_NAME)

    def _load(self, path: str | Path, ck: dict[str, Any] | None = None) -> None:
        ck = ck if ck is not None else load_checkpoint(path)
        try:
            self.G.load_state_dict(ck["generator"])
            self.D.load_state_dict(ck["discriminator"])
            self.opt_g.load_state_dict(ck["opt_g"])
            self.opt_d.load_state_dict(ck["opt_d"])
            if ck.get("scaler_g"):
                self.scaler_g.load_state_dict(ck["scaler_g"])
            if ck.get("scaler_d"):
                self.scaler_d.load_state_dict(ck["scaler_d"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ConfigError(f"{path}: checkpoint does not match this config "
                              f"({str(e).splitlines()[0]})") from None
        self.step = int(ck["step"])
        self.elapsed_before = float(ck.get("elapsed_s", 0.0))
        self.commands = [str(c) for c in ck.get("commands", [])]
        self.init_note = str(ck.get("init", ""))
        self._resumed_logs = (dict(ck.get("last_logs", {})), dict(ck.get("last_val", {})))
        set_rng_state(ck["rng"])
        if ck.get("world_size", 1) != self.d.world and self.d.main:
            log.warning("resuming a %s-process run with %s processes: data order differs from the "
                        "original run", ck.get("world_size"), self.d.world)
        if self.d.main:
            log.info("resumed from %s at step %d", path, self.step)

    def _init_from(self, path: str | Path) -> str:
        """Load G (strictly) and, when the file has a matching one, D from a weights file; return a
        note for the log and the exported metadata."""
        try:
            path = resolve_weights(path)  # a model name (big-lama) -> its cached file, fetched on first use
            state, meta = read_state(path)  # one read serves G and D (a big-lama .ckpt is ~400 MB)
            load_state_into(self.G, extract_generator_state(state), path)
        except (WeightsError, InputError) as e:
            raise ConfigError(f"model.init_weights: {e}") from None
        note = f"G from {path}" + (f" (step {meta['step']})" if meta.get("step") else "")
        d_state = extract_discriminator_state(state)
        if d_state and not state_dict_problems(self.D.state_dict(), d_state):
            self.D.load_state_dict(d_state)
            note += ", D from the same file"
        else:
            note += ", D fresh" + (" (the file's discriminator does not fit model.disc_*)" if d_state else "")
        if self.d.main:
            log.info("initialised %s", note)
        return note

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def _clip(self, module: torch.nn.Module) -> float:
        if self.cfg.optim.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.optim.grad_clip))
        return float("nan")

    def train_step(self, batch: dict) -> dict[str, float]:
        image = batch["image"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        inp = coarse_fill(self.coarse, image, mask, self.cfg.refine.coarse_factor) if self.refine else image

        # generator step (D frozen: gradients only flow through it to the prediction)
        self.D.requires_grad_(False)
        with self._autocast():
            pred = self.G(inp, mask)
            loss_g, logs_g = self.loss.generator_loss(pred.float(), image, mask)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler_g.scale(loss_g).backward()
        allreduce_mean_grads(self.G, self.d)
        self.scaler_g.unscale_(self.opt_g)
        gn_g = self._clip(self.G)
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)

        logs = {"loss/g_total": float(loss_g.detach()), "grad_norm/g": gn_g}
        logs.update(float_logs(logs_g, "g/"))
        self._last_batch = (inp, mask, pred, image)
        broadcast_state(self.G, self.d, buffers_only=True)
        if self.cfg.loss.adv == 0 and self.cfg.loss.fm == 0:
            return logs  # no term reads D: training it would only cost time (~40% of a step)

        # discriminator step on the (detached) prediction of this step
        with self._autocast():
            loss_d, logs_d = self.loss.discriminator_loss(pred.detach().float(), image, mask,
                                                          grad_scale=self.scaler_d.get_scale() if self.amp else 1.0)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler_d.scale(loss_d).backward()
        allreduce_mean_grads(self.D, self.d)
        self.scaler_d.unscale_(self.opt_d)
        gn_d = self._clip(self.D)
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        broadcast_state(self.D, self.d, buffers_only=True)
        logs.update({"loss/d_total": float(loss_d.detach()), "grad_norm/d": gn_d})
        logs.update(float_logs(logs_d, "d/"))
        return logs

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self, model: Generator | None = None) -> dict[str, float]:
        """PSNR (composite vs target) per mask type on the fixed held-out set, G in eval mode."""
        if self.val is None:
            return {}
        g = model if model is not None else self.G
        was_training = g.training
        g.eval()
        per_type: dict[str, list[float]] = {}
        hole: dict[str, list[float]] = {}
        for img, msk, types in self.val.batches(8):
            img, msk = img.to(self.device), msk.to(self.device)
            inp = coarse_fill(self.coarse, img, msk, self.cfg.refine.coarse_factor) if self.refine else img
            pred = g(inp, msk).float()
            comp = msk * pred + (1 - msk) * img
            for t, v, vh in zip(types, psnr_batch(comp, img).tolist(), hole_psnr_batch(comp, img, msk).tolist(),
                                strict=True):
                per_type.setdefault(t, []).append(v)
                hole.setdefault(t, []).append(vh)
        g.train(was_training)
        out = {f"val/psnr_{t}": float(np.mean(v)) for t, v in per_type.items()}
        out["val/psnr_mean"] = float(np.mean([np.mean(v) for v in per_type.values()]))
        out.update({f"val_hole/psnr_{t}": float(np.mean(v)) for t, v in hole.items()})
        out["val_hole/psnr_mean"] = float(np.mean([np.mean(v) for v in hole.values()]))
        return out

    # ------------------------------------------------------------------ loop
    def _stop_requested(self, flag: bool) -> bool:
        if not self.d.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)  # nccl: on the GPU
        dist.broadcast(t, 0)
        return bool(t.item())

    def fit(self) -> Path | None:
        cfg, tc = self.cfg, self.cfg.train
        total = tc.steps
        sampler = StepBatchSampler(len(self.dataset), cfg.optim.batch_size, tc.seed, self.step, total,
                                   rank=self.d.rank, world_size=self.d.world)
        loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                            num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda")
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.out / "checkpoints")
            atomic_write_text(self.out / "config.yaml", dump_config(cfg))
            self._log_setup()
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)

        # Every rank catches SIGINT/SIGTERM (torchrun forwards them to all workers); rank 0's flag,
        # broadcast each step, decides, so all ranks stop after the same step.
        interrupted = {"flag": False}
        old = {}

        def on_signal(signum, frame):  # finish the step, then checkpoint + export
            interrupted["flag"] = True
            log.warning("signal %s: stopping after this step", signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, on_signal)
            except ValueError:  # not in the main thread
                pass

        from tqdm import tqdm

        bar = tqdm(total=total, initial=self.step, disable=not self.d.main, unit="step", dynamic_ncols=True)
        self.t_start = time.time()
        t_window, s_window = time.time(), self.step
        dirty = False
        self.G.train()
        self.D.train()
        try:
            for batch in loader:
                logs = self.train_step(batch)
                self.step += 1
                dirty = True
                bar.update(1)
                if not all(math.isfinite(v) for k, v in logs.items() if k.startswith("loss/")):
                    raise FloatingPointError(f"non-finite loss at step {self.step}: {logs}")
                if self.d.main:
                    self.last_logs = logs
                    if self.step % tc.log_every == 0 or self.step == total:
                        now = time.time()
                        sps = (self.step - s_window) / max(now - t_window, 1e-9)
                        t_window, s_window = now, self.step
                        self._write_scalars({**logs, "perf/steps_per_sec": sps,
                                             "lr/g": self.opt_g.param_groups[0]["lr"],
                                             "lr/d": self.opt_d.param_groups[0]["lr"]})
                        bar.set_postfix(g=f"{logs['loss/g_total']:.3f}", d=f"{logs.get('loss/d_total', 0):.3f}",
                                        sps=f"{sps:.2f}")
                        log.info("step %d  %s  %.2f steps/s", self.step,
                                 "  ".join(f"{k}={v:.4g}" for k, v in logs.items() if "/" in k), sps)
                    if tc.image_every and self.step % tc.image_every == 0:
                        inp, mask, pred, image = self._last_batch
                        self.writer.add_image("train/input_mask_pred_target", image_grid(image, mask, pred),
                                              self.step)
                    if tc.val_every and self.step % tc.val_every == 0:
                        self._validate_and_log()
                if (tc.ckpt_every and self.step % tc.ckpt_every == 0) or \
                        (tc.keep_every and self.step % tc.keep_every == 0):
                    self.save_checkpoint()
                    dirty = False
                over_budget = tc.time_budget_min > 0 and \
                    (self.elapsed_before + time.time() - self.t_start) > tc.time_budget_min * 60
                if self._stop_requested(interrupted["flag"] or over_budget):
                    self.stop_reason = (f"time budget of {tc.time_budget_min:g} min reached"
                                        if over_budget else "stopped by signal")
                    break
        finally:
            bar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if dirty:
            self.save_checkpoint()
        if self.d.main and self.val is not None and (not tc.val_every or self.step % tc.val_every):
            self._validate_and_log()
        return self.finish()

    def _write_scalars(self, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            if math.isfinite(v):
                self.writer.add_scalar(k, v, self.step)

    def _validate_and_log(self) -> None:
        self.last_val = self.validate()
        if self.last_val:
            self._write_scalars(self.last_val)
            log.info("step %d  validation PSNR %.2f dB, in the hole %.2f dB (hole: %s)", self.step,
                     self.last_val["val/psnr_mean"], self.last_val["val_hole/psnr_mean"],
                     ", ".join(f"{k[14:]} {v:.2f}" for k, v in self.last_val.items()
                               if k.startswith("val_hole/") and k != "val_hole/psnr_mean"))

    def _log_setup(self) -> None:
        cfg = self.cfg
        log.info("config %s: model %s (%s), mode %s, %d train / %d held-out images, masks %s, "
                 "batch %d x %d process(es), crop %d, device %s%s", cfg.train.out_dir, cfg.model.name,
                 "zero holes" if not self.refine else "sees coarse fill", cfg.train.mode,
                 len(self.train_paths), len(self.val_paths), cfg.masks.policy, cfg.optim.batch_size,
                 self.d.world, cfg.data.crop, self.device, " + AMP" if self.amp else "")
        if self.perceptual_on:
            log.info("perceptual loss: ON (HRF ResNet50-dilated weights from %s)", cfg.perceptual_weights)
        elif cfg.loss.perceptual == "recon":
            log.info("perceptual loss: %s", perceptual_note(cfg, False))
        else:
            log.warning("perceptual loss: %s -- the holes are supervised only by the adversarial, "
                        "feature-matching and frequency terms", perceptual_note(cfg, False))
        log.info("loss terms: %s", ", ".join(f"{k} {v}" for k, v in loss_terms(cfg, self.perceptual_on).items()))

    # ------------------------------------------------------------------ end of run
    def metadata(self) -> dict[str, Any]:
        cfg = self.cfg
        wall = self.elapsed_before + time.time() - getattr(self, "t_start", time.time())
        return {
            "training_mode": cfg.train.mode,
            "training_steps": str(self.step),
            "training_target_steps": str(cfg.train.steps),
            "training_stopped": self.stop_reason or "completed",
            "training_config": cfg.to_dict(),
            "training_data": {"root": cfg.data.root, "train_images": len(self.train_paths),
                              "holdout": [p.name for p in self.val_paths],
                              "excluded": [p.name for p in self.excluded], "crop": cfg.data.crop},
            "init": self.init_note or "random",
            "mask_policy": cfg.masks.policy,
            "losses": loss_terms(cfg, self.perceptual_on),
            "perceptual": perceptual_note(cfg, self.perceptual_on),
            "final_losses": {k: round(v, 6) for k, v in self.last_logs.items()},
            "val_psnr": val_record(self.last_val),
            "world_size": str(self.d.world),
            "wall_time_min": f"{wall / 60:.1f}",
            "command": " ; then ".join(self.commands + [self.command]),
        }

    @torch.no_grad()
    def recalibrated_generator(self, n_batches: int) -> Generator:
        """A copy of G whose BatchNorm running statistics are the plain average over ``n_batches``
        batches drawn like training batches (own seed stream; the training state is untouched)."""
        import copy

        g = copy.deepcopy(self.G)
        bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        g.train()
        seed = self.cfg.train.seed + 7919  # batches the run never trained on with this key
        sampler = StepBatchSampler(len(self.dataset), self.cfg.optim.batch_size, seed, 0, n_batches)
        for keys in sampler:
            batch = collate([self.dataset[k] for k in keys])
            image, mask = batch["image"].to(self.device), batch["mask"].to(self.device)
            inp = coarse_fill(self.coarse, image, mask, self.cfg.refine.coarse_factor) if self.refine else image
            g(inp, mask)
        for m in bns:
            m.momentum = 0.1
        return g.eval()

    def export(self, path: Path | None = None) -> Path:
        path = Path(path) if path else self.out / self.cfg.train.export_name
        source = f"training.train ({self.cfg.train.mode}, config {self.cfg.model.name}, step {self.step})"
        extra = self.metadata()
        model = self.G
        n = self.cfg.train.bn_recalib_batches
        if n > 0:
            model = self.recalibrated_generator(n)
            extra["bn_statistics"] = f"re-estimated over {n} training-distribution batches before export"
            if self.val is not None:
                extra["val_psnr_training_bn"] = extra["val_psnr"]
                extra["val_psnr"] = val_record(self.validate(model))
        else:
            extra["bn_statistics"] = "running averages from training (momentum 0.1)"
        return save_weights(model, path, step=self.step, source=source, extra=extra)

    def finish(self) -> Path | None:
        checks = [state_checksum(self.G)]
        if self.d.enabled:
            gathered: list[Any] = [None] * self.d.world
            dist.all_gather_object(gathered, checks[0])
            checks = gathered
        out = None
        if self.d.main:
            out = self.export()
            summary = {"step": self.step, "stopped": self.stop_reason or "completed",
                       "weights": str(out), "rank_generator_checksums": checks,
                       "final_losses": self.last_logs, "validation": self.last_val,
                       "perceptual": perceptual_note(self.cfg, self.perceptual_on)}
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
            if self.writer is not None:
                self.writer.close()
            log.info("exported generator (step %d) to %s", self.step, out)
        if self.d.enabled:
            dist.barrier()
        return out
