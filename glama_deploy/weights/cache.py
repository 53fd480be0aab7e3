"""The model cache on disk.

Layout (``$GLAMA_HOME``, else ``$XDG_CACHE_HOME/glama-deploy``, else ``~/.cache/glama-deploy``)::

    downloads/big-lama.zip.incomplete    a partial download, resumed with an HTTP Range request
    downloads/big-lama.lock              held while one process fetches the model
    models/big-lama/big-lama.safetensors        the generator, fp32 (what a name resolves to)
    models/big-lama/big-lama.fp16.safetensors   the same in fp16 (``get --fp16``)
    models/big-lama/source.json          URL, sha256, size, licence, date of the download
    known_sha256.json                    name -> sha256 of first downloads when none is published

Only whole, verified, converted files ever get their final name (temp file + rename); a partial
download keeps the ``.incomplete`` suffix, and unpacking happens in a temp folder that is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..fsutil import atomic_write_bytes

OFFLINE_ENV = "GLAMA_OFFLINE"


def cache_root() -> Path:
    """``$GLAMA_HOME`` or ``$XDG_CACHE_HOME/glama-deploy`` or ``~/.cache/glama-deploy``."""
    if os.environ.get("GLAMA_HOME"):
        return Path(os.environ["GLAMA_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "glama-deploy"


def offline_from_env() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def weights_file(name: str, fp16: bool = False) -> Path:
    return model_dir(name) / f"{name}{'.fp16' if fp16 else ''}.safetensors"


def source_file(name: str) -> Path:
    return model_dir(name) / "source.json"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def partial_file(name: str, suffix: str) -> Path:
    return downloads_dir() / f"{name}{suffix}.incomplete"


def cached_weights(name: str, fp16: bool | None = None) -> Path | None:
    """The converted file of ``name`` if present (``fp16=None``: fp32, else fp16)."""
    options = [False, True] if fp16 is None else [fp16]
    for half in options:
        path = weights_file(name, half)
        if path.is_file():
            return path
    return None


def read_source(name: str) -> dict:
    try:
        return json.loads(source_file(name).read_text())
    except (OSError, ValueError):
        return {}


def write_source(name: str, info: dict) -> None:
    atomic_write_bytes(source_file(name), (json.dumps(info, indent=2) + "\n").encode())


def _known_path() -> Path:
    return cache_root() / "known_sha256.json"


def known_sha256(name: str) -> str | None:
    """The sha256 recorded at the first download of ``name`` (trust on first use)."""
    try:
        return json.loads(_known_path().read_text()).get(name)
    except (OSError, ValueError):
        return None


def record_sha256(name: str, sha256: str) -> None:
    try:
        known = json.loads(_known_path().read_text())
    except (OSError, ValueError):
        known = {}
    known[name] = sha256
    atomic_write_bytes(_known_path(), (json.dumps(known, indent=2, sort_keys=True) + "\n").encode())


def forget_sha256(name: str) -> None:
    try:
        known = json.loads(_known_path().read_text())
    except (OSError, ValueError):
        return
    known.pop(name, None)
    atomic_write_bytes(_known_path(), (json.dumps(known, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock for ``name`` (several DDP ranks resolving the same name download once)."""
    downloads_dir().mkdir(parents=True, exist_ok=True)
    with open(downloads_dir() / f"{name}.lock", "a") as f:
        try:
            import fcntl
        except ImportError:  # Windows: no lock
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove(name: str) -> list[Path]:
    """Delete the converted files, source record and partial downloads of ``name``; return them."""
    removed = []
    folder = model_dir(name)
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed.append(p)
        with contextlib.suppress(OSError):
            folder.rmdir()
    if downloads_dir().is_dir():
        for p in sorted(downloads_dir().glob(f"{name}.*")):
            if p.name.endswith(".incomplete") and p.is_file():
                p.unlink()
                removed.append(p)
    return removed
