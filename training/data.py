"""Training data: random crops of an image folder with masks drawn by a mask policy.

Determinism (what makes ``--resume`` exact): every sample is keyed by ``(epoch, index)`` and draws
its crop, flip and mask from ``np.random.default_rng([seed, epoch, index])``; the order in which
keys are visited is a function of ``(seed, step)`` only (:class:`StepBatchSampler`, built on
:class:`torch.utils.data.DistributedSampler`, which also splits the data between DDP ranks).
Nothing depends on how many batches were drawn before, so a run restarted at step k sees exactly
the batches an uninterrupted run sees from step k on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from glama_deploy.io import truncation_problem

log = logging.getLogger("training.data")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """A bad image folder / holdout list / image file; the message names it."""


def find_images(roots: str | Path | Sequence[str | Path]) -> list[Path]:
    """All images under one folder or several (recursive, sorted, each file once).

    Clear error for an unset, missing or empty folder: an empty ``data.root`` is refused rather than
    read as the current directory (``Path('')`` is ``.``, and a run would train on whatever lies below
    it, icons inside ``.venv`` included).
    """
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    if not roots or any(not str(r).strip() for r in roots):
        raise DataError("data.root is not set: name the folder(s) of training photos "
                        "(--set data.root=DIR or data.root: [DIR1, DIR2] in the YAML)")
    found: dict[Path, None] = {}
    for r in roots:
        root = Path(r)
        if not root.exists():
            raise DataError(f"{root}: image folder not found (set data.root)")
        if not root.is_dir():
            raise DataError(f"{root}: not a folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not paths:
            raise DataError(f"{root}: no images found (looked recursively for {', '.join(IMAGE_EXTS)})")
        found.update((p, None) for p in paths)
    return list(found)


def split_holdout(paths: Sequence[Path], roots: str | Path | Sequence[str | Path],
                  holdout: Sequence[str]) -> tuple[list[Path], list[Path]]:
    """Split into (train, held-out). Holdout entries match a file name or a path relative to a root."""
    roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    wanted: dict[str, Path | None] = {h: None for h in holdout}
    train, val = [], []
    for p in paths:
        rels = [p.relative_to(r).as_posix() for r in roots if p.is_relative_to(r)]
        hit = next((r for r in rels if r in wanted), p.name if p.name in wanted else None)
        if hit is not None:
            wanted[hit] = p
            val.append(p)
        else:
            train.append(p)
    missing = [h for h, p in wanted.items() if p is None]
    where = ", ".join(str(r) for r in roots)
    if missing:
        raise DataError(f"{where}: held-out image(s) not found: {', '.join(missing)}")
    if not train:
        raise DataError(f"{where}: every image is held out; nothing left to train on")
    return train, val


def read_rgb_u8(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB (grey/alpha/16-bit converted by OpenCV); clear error for unreadable files.

    A truncated JPEG or PNG is refused: OpenCV decodes what is there and fills the rest with grey,
    reporting it only as a libjpeg warning that names no file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    problem = truncation_problem(data)
    if problem:
        raise DataError(f"{path}: {problem}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(f"{path}: not a readable image (OpenCV could not decode it)")
    if min(img.shape[:2]) < 8:
        raise DataError(f"{path}: image is {img.shape[1]}x{img.shape[0]}; too small to train on")
    return np.ascontiguousarray(img[:, :, ::-1])


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")


def _check_file(path: Path) -> None:
    """Readable, a known image signature, and not a truncated JPEG/PNG (the bytes only; no decoding)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if not (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise DataError(f"{path}: not a readable image (no JPEG/PNG/BMP/TIFF/WebP signature)")
    problem = truncation_problem(data)
    if problem:
        raise DataError(f"{path}: {problem}")


def resize_short_side(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (nw, nh), interpolation=interp)


def center_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize so the image covers (h, w), then take the central (h, w) window."""
    ih, iw = img.shape[:2]
    s = max(h / ih, w / iw)
    if abs(s - 1) > 1e-9:
        nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    ih, iw = img.shape[:2]
    y, x = (ih - h) // 2, (iw - w) // 2
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0,1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


class InpaintingDataset(Dataset):
    """Random crops + flips + a policy mask per sample, keyed by ``(epoch, index)``.

    ``index`` may exceed ``len(paths)`` (virtual repeats for folders smaller than a global batch);
    the image is ``paths[index % len(paths)]`` and the randomness is keyed by the full index.
    """

    def __init__(self, paths: Sequence[Path], crop: int, policy, seed: int = 0, min_scale: float = 0.5,
                 hflip: bool = True, cache_images: bool = True):
        if not paths:
            raise DataError("no training images")
        self.crop, self.policy, self.seed = crop, policy, seed
        self.min_scale, self.hflip = min_scale, hflip
        # Check every file now (bad files are skipped at start, with their names, not met at step
        # 10k); with the cache, decode everything now too.
        good, images, self.skipped = [], [], []
        for p in paths:
            try:
                img = read_rgb_u8(p) if cache_images else _check_file(p)
            except DataError as e:
                self.skipped.append(str(e))
                continue
            good.append(p)
            images.append(img)
        for why in self.skipped:
            log.warning("skipping %s", why)
        if not good:
            raise DataError(f"no usable training images ({len(self.skipped)} skipped: {self.skipped[0]})")
        self.paths = good
        self._cache: dict[int, np.ndarray] | None = dict(enumerate(images)) if cache_images else None

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        i %= len(self.paths)
        if self._cache is not None:
            return self._cache[i]
        return read_rgb_u8(self.paths[i])

    def sample_crop(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.crop
        h, w = img.shape[:2]
        short = min(h, w)
        if short < c:  # too small: upscale so the short side equals the crop
            scale = c / short
        else:  # big: random downscale (log-uniform) so the crop sees more of the scene
            lo = min(1.0, max(self.min_scale, c / short))
            scale = math.exp(rng.uniform(math.log(lo), 0.0)) if lo < 1 else 1.0
        if abs(scale - 1.0) > 1e-6:
            nh, nw = max(c, round(h * scale)), max(c, round(w * scale))
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
            h, w = img.shape[:2]
        y = int(rng.integers(0, h - c + 1))
        x = int(rng.integers(0, w - c + 1))
        out = img[y:y + c, x:x + c]
        if self.hflip and rng.random() < 0.5:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        img = self.sample_crop(self.image(int(index)), rng)
        mask, kind = self.policy(self.crop, self.crop, rng)
        return {
            "image": to_tensor(img),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "type": kind,
            "index": int(index),
        }


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for steps ``start_step .. total_steps-1`` of one rank.

    Epoch ``e`` visits a permutation from ``DistributedSampler(seed=seed).set_epoch(e)`` (each rank
    its own share); a step's batch is a pure function of ``(seed, step, rank, world)``. Folders
    smaller than ``world * batch_size`` are virtually repeated.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1):
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self.repeats = max(1, math.ceil(world_size * batch_size / n_items))
        self.n_virtual = n_items * self.repeats
        self._ds = DistributedSampler(range(self.n_virtual), num_replicas=world_size, rank=rank,
                                      shuffle=True, seed=seed, drop_last=False)
        self.batches_per_epoch = self._ds.num_samples // batch_size
        self._cached: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        if self._cached is None or self._cached[0] != epoch:
            self._ds.set_epoch(epoch)
            self._cached = (epoch, list(iter(self._ds)))
        return self._cached[1]

    def batch(self, step: int) -> list[tuple[int, int]]:
        epoch, b = divmod(step, self.batches_per_epoch)
        idx = self.order(epoch)[b * self.batch_size:(b + 1) * self.batch_size]
        return [(epoch, i) for i in idx]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def collate(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "mask": torch.stack([s["mask"] for s in samples]),
        "type": [s["type"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples]),
    }


class ValidationSet:
    """Held-out images (resized + center-cropped to ``size``) x a fixed mask set (seeded)."""

    def __init__(self, paths: Sequence[Path], size: int, mask_types: Sequence[str], make_policy,
                 per_type: int = 1, seed: int = 1234):
        self.items: list[tuple[torch.Tensor, torch.Tensor, str, str]] = []
        for i, p in enumerate(paths):
            img = to_tensor(center_crop(read_rgb_u8(p), size, size))
            for t_i, t in enumerate(mask_types):
                policy = make_policy({t: 1.0})
                for k in range(per_type):
                    rng = np.random.default_rng([seed, i, t_i, k])
                    mask, _ = policy(size, size, rng)
                    self.items.append((img, torch.from_numpy(np.asarray(mask, np.float32))[None], t, p.name))

    def __len__(self) -> int:
        return len(self.items)

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        for s in range(0, len(self.items), batch_size):
            chunk = self.items[s:s + batch_size]
            yield (torch.stack([c[0] for c in chunk]), torch.stack([c[1] for c in chunk]),
                   [c[2] for c in chunk])
