"""Named models: where each comes from, what it is, how to check it.

Imports nothing heavy (no torch): ``list`` and the offline error run in a fraction of a second.
Every fact below is what the official source or the hosting page publishes, with where it was read;
a ``sha256`` of ``None`` means none is published, and the first download's hash is recorded and
checked against later ones (trust on first use, see :mod:`.cache`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

FORMATS = ("bundled", "lama-zip", "checkpoint")
DEFAULT_MODEL = "glama-small"
DEFAULT_MAX_UNPACKED = 2 * 1024**3  # refuse archives that would unpack to more than this


@dataclass(frozen=True)
class ModelEntry:
    """One named model. ``urls`` are tried in order (the first is the official one)."""

    name: str
    config: str                     # a key of glama_deploy.model.CONFIGS
    format: str                     # bundled | lama-zip (models/best.ckpt + config.yaml) | checkpoint
    parameters: int
    licence: str
    description: str
    good_at: str
    urls: tuple[str, ...] = ()
    size: int | None = None         # bytes of the file at urls, as published
    sha256: str | None = None       # as published; None: trust on first download
    source: str = ""                # where the facts above were read
    member: str = "models/best.ckpt"  # lama-zip: the checkpoint inside (any leading folder)
    max_unpacked: int = DEFAULT_MAX_UNPACKED
    notes: tuple[str, ...] = field(default=())

    @property
    def downloadable(self) -> bool:
        return self.format != "bundled"


REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add (or replace) an entry; checks the fields that would make a download unsafe."""
    if entry.format not in FORMATS:
        raise ValueError(f"{entry.name}: unknown format {entry.format!r} (use {', '.join(FORMATS)})")
    if entry.downloadable and not entry.urls:
        raise ValueError(f"{entry.name}: a downloadable model needs at least one URL")
    if entry.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
        raise ValueError(f"{entry.name}: sha256 must be 64 lowercase hex digits")
    REGISTRY[entry.name] = entry
    return entry


register(ModelEntry(
    name="glama-small",
    config="small",
    format="bundled",
    parameters=1_269_571,
    licence="same as this project",
    description="the bundled default: pyramid fill + a small learned correction, trained on one CPU",
    good_at="demos, CI, thin masks and line/grid masks on small photos; a starting point for fine-tuning",
    source="glama_deploy/assets/glama-small.safetensors (see README, 'Default model')",
))

register(ModelEntry(
    name="big-lama",
    config="big-lama",
    format="lama-zip",
    parameters=50_975_875,
    licence="Apache-2.0",
    description="LaMa's best model (Suvorov et al., WACV 2022): FFC-ResNet, 18 blocks, trained on Places2 "
                "(Places Challenge) at 256 px",
    good_at="production quality: large and irregular holes, object removal, photos up to ~2K (it generalises "
            "to resolutions far above its 256 px training size)",
    urls=(
        # the command in the official README (github.com/advimman/lama, 'Inference', step 1, commit 786f593)
        "https://huggingface.co/smartywu/big-lama/resolve/main/big-lama.zip",
        # the same file pinned to the Hugging Face commit that added it ('best model', 05cb2be)
        "https://huggingface.co/smartywu/big-lama/resolve/05cb2be7f8dbe6ca7c6e78f4fc827a4b2baaa4a9/big-lama.zip",
    ),
    size=381_428_720,
    sha256="f1b358ca24093b93a106183b98a3dea6e8ed09f3b43ea7251eb2c81e7b4575f6",
    source="URL: README of github.com/advimman/lama (commit 786f5936b27f, 2025-02-05). Size and sha256: "
           "the Git LFS pointer of big-lama.zip on huggingface.co/smartywu/big-lama, commit 05cb2be "
           "('oid sha256:f1b358ca...', 'size 381428720'; the file page shows 381 MB). The LaMa authors "
           "publish no checksum of their own. Licence: the LaMa repository's LICENSE (Apache-2.0).",
    member="models/best.ckpt",
    notes=(
        "Training data: Places2; its images carry their own (research) terms.",
        "IOPaint / lama-cleaner ship a TorchScript export of the same network instead "
        "(https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt, md5 "
        "e3aa4aaa15225a33ec84f9f4bc47e500 per iopaint/model/lama.py); a TorchScript file holds code, "
        "so it is not a source here.",
        "LaMa's other models (lama-fourier, the CelebA-HQ ones ...) are only in a Google Drive folder "
        "(lama-models.zip), which has no stable direct URL: not in the registry; pass their best.ckpt "
        "with --weights.",
    ),
))


def env_name(name: str) -> str:
    """``big-lama`` -> ``BIG_LAMA`` (for the per-model URL override)."""
    return re.sub(r"[^0-9A-Za-z]", "_", name).upper()


def model_urls(entry: ModelEntry) -> tuple[str, ...]:
    """The URLs to try: ``$GLAMA_MODEL_URL_<NAME>`` (a mirror; the size and sha256 still apply) first."""
    override = os.environ.get(f"GLAMA_MODEL_URL_{env_name(entry.name)}")
    return (override,) if override else entry.urls


def get_entry(name: str) -> ModelEntry | None:
    return REGISTRY.get(name)


def known_names() -> list[str]:
    return sorted(REGISTRY)
