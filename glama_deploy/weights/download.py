"""Resumable, verified downloads with the standard library (urllib) and a tqdm bar.

The bytes go to ``<file>.incomplete``; a cut connection leaves it there and the next call resumes
it with ``Range: bytes=N-`` (a server that ignores Range answers 200 and the file starts over).
The caller verifies size and sha256 before anything gets a final name.
"""

from __future__ import annotations

import errno
import http.client
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import WeightsError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = 60.0
USER_AGENT = "glama-deploy (python urllib)"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DownloadError(WeightsError):
    """A download that failed; the message is one line and names the URL (CLI exit code 2)."""


class Unreachable(DownloadError):
    """No answer at all from the host (no network, DNS, refused): worth trying a mirror."""


class Refused(DownloadError):
    """The server answered but not with the file (HTTP error, another size): worth trying a mirror."""


def _open_part(path: Path, append: bool):
    """The partial file, opened for writing (a seam for the disk-full test)."""
    return open(path, "ab" if append else "wb")


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    return str(reason).strip() or type(reason).__name__


def fetch(url: str, part: Path, *, size: int | None = None, progress: bool = True,
          timeout: float = TIMEOUT, label: str = "") -> int:
    """Download ``url`` into ``part``, resuming what is there; return the file's size.

    Raises :class:`Unreachable` (no answer), :class:`Refused` (an HTTP error, a size differing from
    ``size``: nothing was downloaded) or :class:`DownloadError` (dropped connection, disk full).
    A dropped connection keeps ``part`` for the next call; a size that cannot be right and a full
    disk delete it.
    """
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return have  # complete already (verified by the caller)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is whole
            return have
        raise Refused(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise Unreachable(f"{url}: cannot connect ({_reason(e)})") from None
    with resp:
        start = _content_range_start(resp.headers.get("Content-Range")) if resp.status == 206 else 0
        if start != have:  # 200 (Range ignored) or an unexpected range: start over
            if have:
                log.info("%s: server did not resume at byte %d; downloading from the start", url, have)
            have = 0
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise Refused(f"{url}: the server offers {total:,} bytes, the registry expects {size:,}; "
                                "not downloading it")
        got = have
        if progress:  # said once the server answered: an error stays the only line
            print(f"downloading {label or part.name} from {url}", file=sys.stderr, flush=True)
        from tqdm import tqdm

        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=label or part.name.removesuffix(".incomplete"), disable=not progress, file=sys.stderr)
        try:
            with bar, _open_part(part, append=have > 0) as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (http.client.IncompleteRead, OSError) as e:  # reset, timeout, short body
                        if isinstance(e, http.client.IncompleteRead) and e.partial:
                            f.write(e.partial)
                            got += len(e.partial)
                        break
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except OSError as e:
            if e.errno in DISK_FULL:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{part.parent}: disk full after {got:,} bytes of {url} ({e.strerror}); "
                                    "the partial file was deleted: free space and run again") from None
            raise
    expected = total if total is not None else size
    if expected is not None and got < expected:
        raise DownloadError(f"{url}: connection dropped after {got:,} of {expected:,} bytes; run the same "
                            "command again to resume")
    return got


def remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
