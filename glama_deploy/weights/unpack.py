"""Safe extraction of a LaMa model archive (``big-lama.zip``: ``big-lama/models/best.ckpt`` +
``big-lama/config.yaml``).

The whole listing is checked before one byte is written: an absolute name, a ``..`` component, a
drive letter, a symlink or a device entry refuses the archive, and so does a declared size over
the cap. Only the members needed are extracted, into a folder of the caller's, and the bytes
actually written are counted against the cap too (a lying header cannot fill the disk).
"""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path, PurePosixPath

from .download import DownloadError

CONFIG_NAME = "config.yaml"


def _unsafe_reason(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    mode = info.external_attr >> 16
    if "\\" in name or "\0" in name:
        return "has a backslash or NUL in its name"
    p = PurePosixPath(name)
    if p.is_absolute() or (p.parts and p.parts[0].endswith(":")):
        return "is an absolute path"
    if ".." in p.parts:
        return "points outside the folder ('..')"
    if stat.S_ISLNK(mode):
        return "is a symlink"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded (plain file)
        return "is not a regular file"
    return None


def check_archive(zf: zipfile.ZipFile, archive: Path | str, max_unpacked: int) -> list[zipfile.ZipInfo]:
    """Refuse the archive if any entry is unsafe or the total declared size exceeds the cap."""
    infos = zf.infolist()
    for info in infos:
        why = _unsafe_reason(info)
        if why:
            raise DownloadError(f"{archive}: refused: entry {info.filename!r} {why}")
    total = sum(i.file_size for i in infos)
    if total > max_unpacked:
        raise DownloadError(f"{archive}: refused: would unpack to {total:,} bytes (cap {max_unpacked:,})")
    return infos


def _find(infos: list[zipfile.ZipInfo], member: str) -> zipfile.ZipInfo | None:
    want = PurePosixPath(member).parts
    hits = [i for i in infos if not i.is_dir() and PurePosixPath(i.filename).parts[-len(want):] == want]
    hits.sort(key=lambda i: len(PurePosixPath(i.filename).parts))
    return hits[0] if hits else None


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: int, archive: Path | str) -> int:
    written = 0
    with zf.open(info) as src, open(dest, "wb") as out:
        while block := src.read(1 << 20):
            written += len(block)
            if written > budget:
                raise DownloadError(f"{archive}: refused: {info.filename} unpacks beyond the size cap")
            out.write(block)
    return written


def unpack_lama_zip(archive: Path, into: Path, member: str = "models/best.ckpt",
                    max_unpacked: int = 2 * 1024**3, label: str | None = None) -> tuple[Path, str | None]:
    """Extract the checkpoint ``member`` (under any leading folder) into ``into``; return its path and
    the text of the ``config.yaml`` beside it (``None`` when absent). Errors name ``label`` (the
    URL) rather than the archive's path in the cache."""
    name = label or archive
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{name}: not a readable zip archive ({e})") from None
    with zf:
        infos = check_archive(zf, name, max_unpacked)
        ckpt = _find(infos, member)
        if ckpt is None:
            names = ", ".join(i.filename for i in infos[:6]) + (" ..." if len(infos) > 6 else "")
            raise DownloadError(f"{name}: no {member} inside (found: {names or 'nothing'})")
        into.mkdir(parents=True, exist_ok=True)
        dest = into / PurePosixPath(member).name
        try:
            used = _extract(zf, ckpt, dest, max_unpacked, name)
            root = PurePosixPath(ckpt.filename).parts[:-len(PurePosixPath(member).parts)]
            config = next((i for i in infos if PurePosixPath(i.filename).parts == (*root, CONFIG_NAME)), None)
            text = None
            if config is not None and config.file_size <= min(1 << 20, max_unpacked - used):
                text = zf.read(config).decode("utf-8", errors="replace")
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as e:
            raise DownloadError(f"{name}: damaged archive ({e})") from None
    return dest, text
