"""Fixed, seeded evaluation mask sets on disk: ``DIR/<type>/<index:04d>.png`` + ``DIR/manifest.json``.

Written by ``python -m training.masks --out DIR`` and read by :mod:`training.evaluate`.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from glama_deploy.fsutil import atomic_write_bytes
from training.masks import ALL_TYPES, MASK_TYPES, MIN_SIZE, resolve_types

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "glama-mask-set"
MANIFEST_VERSION = 1


class MaskSetError(ValueError):
    """A mask-set directory is missing or inconsistent."""


def mask_rng(seed: int, type_name: str, index: int) -> np.random.Generator:
    """The rng of mask ``index`` of ``type_name`` in a set: independent of the other types chosen."""
    return np.random.default_rng([seed, zlib.crc32(type_name.encode()), index])


def _write_atomic(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)


def write_mask_set(out: str | os.PathLike, size: tuple[int, int], per_type: int, seed: int = 0,
                   types: Sequence[str] = tuple(MASK_TYPES), progress: bool = False) -> dict:
    """Write ``out/<type>/<index:04d>.png`` (0/255) and ``out/manifest.json``; returns the manifest.

    Mask ``i`` of type ``t`` is drawn from :func:`mask_rng` ``(seed, t, i)``. Files of an older set in
    ``out`` that the new manifest does not list are left alone (and ignored by :func:`load_mask_set`).
    """
    h, w = size
    types = resolve_types(types)
    if per_type < 1:
        raise ValueError(f"per_type must be >= 1, got {per_type}")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise ValueError(f"mask size {h}x{w} is too small: need at least {MIN_SIZE}x{MIN_SIZE}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a half-written set never has a manifest
    files: dict[str, list[str]] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(types) * per_type, unit="mask", desc=f"masks -> {out}")
    for t in types:
        gen = ALL_TYPES[t]()
        (out / t).mkdir(exist_ok=True)
        files[t] = []
        for i in range(per_type):
            rel = f"{t}/{i:04d}.png"
            m = gen(h, w, mask_rng(seed, t, i))
            ok, buf = cv2.imencode(".png", (m * 255).astype(np.uint8))
            if not ok:
                raise RuntimeError(f"could not encode {rel} as PNG")
            _write_atomic(out / rel, buf.tobytes())
            files[t].append(rel)
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "types": types, "size": [h, w],
                "seed": seed, "count": per_type, "files": files}
    _write_atomic(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    """The validated manifest of a mask set (raises :class:`MaskSetError` with the problem)."""
    d = Path(directory)
    mf = d / MANIFEST
    if not d.is_dir():
        raise MaskSetError(f"mask set directory not found: {d}")
    if not mf.is_file():
        raise MaskSetError(f"{mf}: missing, so {d} is not a mask set "
                           f"(make one with: python -m training.masks --out {d})")
    try:
        man = json.loads(mf.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MaskSetError(f"{mf}: unreadable ({e})") from None
    if not isinstance(man, dict) or man.get("format") != MANIFEST_FORMAT:
        raise MaskSetError(f"{mf}: not a {MANIFEST_FORMAT} manifest")
    if man.get("version") != MANIFEST_VERSION:
        raise MaskSetError(f"{mf}: version {man.get('version')!r}, expected {MANIFEST_VERSION}")
    types, files, count = man.get("types"), man.get("files"), man.get("count")
    if not (isinstance(types, list) and isinstance(files, dict) and isinstance(count, int)
            and list(files) == types):
        raise MaskSetError(f"{mf}: 'types', 'files' and 'count' are missing or inconsistent")
    for t in types:
        rels = files[t]
        if not isinstance(rels, list) or len(rels) != count:
            raise MaskSetError(f"{mf}: type {t!r} lists {len(rels) if isinstance(rels, list) else rels!r} "
                               f"files, expected {count}")
        for rel in rels:
            p = Path(rel) if isinstance(rel, str) else None
            if p is None or p.is_absolute() or ".." in p.parts:
                raise MaskSetError(f"{mf}: bad file entry {rel!r}")
            if not (d / p).is_file():
                raise MaskSetError(f"{mf}: lists {d / p}, which does not exist")
    return man


def load_mask_set(directory: str | os.PathLike) -> dict[str, list[Path]]:
    """``{type: [mask png paths]}`` of a mask set written by :func:`write_mask_set` (manifest order)."""
    man = read_manifest(directory)
    d = Path(directory)
    return {t: [d / rel for rel in man["files"][t]] for t in man["types"]}
