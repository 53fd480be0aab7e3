"""Get a named model into the cache, and resolve ``--weights NAME_OR_PATH`` for every entry point.

``get_model`` downloads (resuming), checks size and sha256, unpacks safely, loads the checkpoint
strictly with the safe loader and writes the generator as ``.safetensors`` (fp32 or fp16) whose
metadata records the source URL, sha256, licence and date. ``resolve_weights`` is the one function
every CLI calls: a path comes back as it is; a name comes back as its cached file, fetched on first
use unless offline.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from pathlib import Path

from ..errors import InputError, WeightsError
from ..fsutil import sha256_file
from . import cache
from .download import DISK_FULL, DownloadError, Refused, Unreachable, fetch, remove_quietly
from .registry import ModelEntry, get_entry, known_names, model_urls

BUILTIN_META = ("config", "generator_config", "blocks", "step", "source", "git_revision", "format")
SUFFIX = {"lama-zip": ".zip", "checkpoint": ".ckpt"}


def entry_or_error(name: str) -> ModelEntry:
    entry = get_entry(name)
    if entry is None:
        raise InputError(f"{name}: unknown model name (known: {', '.join(known_names())})")
    return entry


def _bundled(entry: ModelEntry) -> Path:
    from ..bundled import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


def _by_hand(entry: ModelEntry) -> str:
    file = Path(entry.urls[0].split("?")[0]).name
    how = (f"unzip it and pass --weights {Path(file).stem}/{entry.member}" if entry.format == "lama-zip"
           else f"pass --weights {file}")
    return (f"fetch {entry.urls[0]} by hand, then {how} "
            f"(or: python -m glama_deploy.weights get {entry.name} --from-file {file})")


def offline_error(entry: ModelEntry, why: str) -> WeightsError:
    return WeightsError(f"{entry.name}: not downloaded yet and offline mode is on ({why}); {_by_hand(entry)}")


def _expected_sha(entry: ModelEntry) -> tuple[str | None, str]:
    if entry.sha256:
        return entry.sha256, "the registry's"
    known = cache.known_sha256(entry.name)
    return known, "the first download's"


def _download(entry: ModelEntry, part: Path, progress: bool) -> str:
    """Fetch into ``part`` from the first URL that answers; return that URL."""
    errors: list[DownloadError] = []
    urls = model_urls(entry)
    for url in urls:
        try:
            fetch(url, part, size=entry.size, progress=progress, label=entry.name)
            return url
        except (Unreachable, Refused) as e:  # nothing downloaded: try the next URL
            errors.append(e)
    first = errors[0]
    more = f" (and {len(errors) - 1} mirror(s) failed too)" if len(errors) > 1 else ""
    if all(isinstance(e, Unreachable) for e in errors):
        raise DownloadError(f"{entry.name}: cannot download: {first}{more}; {_by_hand(entry)}")
    raise DownloadError(f"{entry.name}: {first}{more}")


def _verify(entry: ModelEntry, path: Path, url: str, delete_bad: bool) -> str:
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        if delete_bad:
            remove_quietly(path)
        raise DownloadError(f"{url}: {size:,} bytes, the registry expects {entry.size:,}"
                            + ("; the file was deleted" if delete_bad else ""))
    digest = sha256_file(path)
    expected, whose = _expected_sha(entry)
    if expected and digest != expected:
        if delete_bad:
            remove_quietly(path)
        raise DownloadError(f"{url}: sha256 {digest} differs from {whose} {expected}"
                            + ("; the file was deleted" if delete_bad else ""))
    return digest


def _load(entry: ModelEntry, ckpt: Path, label: str):
    """Strict load with the safe loader; errors name ``label`` (URL and member), not the temp path."""
    from ..model import CONFIGS, Generator
    from ..model.weights import extract_generator_state, load_state_into, read_state

    try:
        state, meta = read_state(ckpt)
        model = Generator(CONFIGS[entry.config])
        load_state_into(model, extract_generator_state(state), label)
    except WeightsError as e:
        raise WeightsError(str(e).replace(str(ckpt), label)) from None
    return model.eval(), meta


def _save(model, target: Path, *, fp16: bool, step: str | None, source: str, extra: dict) -> Path:
    from ..model.weights import save_weights

    if fp16:
        model = model.half()
    extra = {**extra, "dtype": "float16" if fp16 else "float32"}
    return save_weights(model, target, step=int(step) if step and step.lstrip("-").isdigit() else None,
                        source=source, extra=extra)


def _convert_cached(entry: ModelEntry) -> Path:
    """fp16 from the cached fp32 file: no download needed (never the other way: fp16 lost bits)."""
    from ..model.weights import load_generator

    model, meta = load_generator(cache.weights_file(entry.name, False))
    extra = {k: v for k, v in meta.items() if k not in BUILTIN_META + ("dtype",)}
    return _save(model, cache.weights_file(entry.name, True), fp16=True, step=meta.get("step"),
                 source=meta.get("source", ""), extra=extra)


def get_model(name: str, *, fp16: bool = False, force: bool = False, offline: bool | None = None,
              progress: bool = True, from_file: str | os.PathLike | None = None) -> Path:
    """The cached ``.safetensors`` of ``name``, downloaded and converted first when missing.

    ``force`` downloads again (the cached file is replaced only once the new one is verified);
    ``from_file`` takes the archive or checkpoint from a local file instead of the network.
    """
    entry = entry_or_error(name)
    if not entry.downloadable:
        if fp16:
            raise InputError(f"{name}: the bundled model has no fp16 variant")
        return _bundled(entry)
    if offline is None:
        offline = cache.offline_from_env()
    target = cache.weights_file(name, fp16)
    if target.is_file() and not force:
        return target
    convert = fp16 and not force and from_file is None and cache.weights_file(name, False).is_file()
    if from_file is None and offline and not convert:  # before the lock: offline writes nothing
        raise offline_error(entry, "--offline" if not cache.offline_from_env() else f"{cache.OFFLINE_ENV}=1")
    with cache.locked(name):
        if target.is_file() and not force:  # another process made it while we waited
            return target
        if convert:
            return _convert_cached(entry)
        return _fetch_and_convert(entry, target, fp16, progress, from_file)


def _fetch_and_convert(entry: ModelEntry, target: Path, fp16: bool, progress: bool,
                       from_file: str | os.PathLike | None) -> Path:
    if from_file is not None:
        archive = Path(from_file)
        if not archive.is_file():
            raise InputError(f"{archive}: not found")
        url, downloaded = archive.resolve().as_uri(), False
    else:
        archive = cache.partial_file(entry.name, SUFFIX[entry.format])
        url, downloaded = _download(entry, archive, progress), True
    digest = _verify(entry, archive, url, delete_bad=downloaded)
    label = f"{url}" + (f" ({entry.member})" if entry.format == "lama-zip" else "")
    try:
        with tempfile.TemporaryDirectory(dir=cache.downloads_dir(), prefix=f"{entry.name}.unpack-") as tmp:
            config_text = None
            if entry.format == "lama-zip":
                from .unpack import unpack_lama_zip

                ckpt, config_text = unpack_lama_zip(archive, Path(tmp), entry.member, entry.max_unpacked,
                                                    label=url)
            else:
                ckpt = archive
            model, meta = _load(entry, ckpt, label)
            extra = {"registry_name": entry.name, "source_url": model_urls(entry)[0] if downloaded else url,
                     "downloaded_from": url, "sha256": digest, "licence": entry.licence,
                     "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
            if config_text:
                extra["lama_config_yaml"] = config_text
            if meta.get("skipped_objects"):
                extra["skipped_objects"] = meta["skipped_objects"]
            _save(model, target, fp16=fp16, step=meta.get("step"), source=url, extra=extra)
    except WeightsError:
        if downloaded:
            remove_quietly(archive)  # a file that does not load is not worth resuming
        raise
    except OSError as e:
        if e.errno in DISK_FULL:
            raise DownloadError(f"{cache.cache_root()}: disk full while converting {entry.name} "
                                f"({e.strerror}); nothing was written") from None
        raise
    if not entry.sha256 and cache.known_sha256(entry.name) is None:
        cache.record_sha256(entry.name, digest)
    cache.write_source(entry.name, {k: v for k, v in extra.items() if k != "lama_config_yaml"}
                       | {"size": archive.stat().st_size, "file": str(target)})
    if downloaded:
        remove_quietly(archive)  # converted: the safetensors is what every entry point reads
    return target


def resolve_weights(name_or_path: str | os.PathLike, offline: bool | None = None,
                    progress: bool = True) -> Path:
    """``--weights`` for every entry point: a registry name -> its cached file (fetched on first use
    unless ``offline`` or ``$GLAMA_OFFLINE``); anything else is a path, returned unchanged."""
    text = os.fspath(name_or_path)
    entry = get_entry(text)
    if entry is None:
        path = Path(text)
        if not path.exists() and not path.suffix and os.sep not in text and "/" not in text:
            raise InputError(f"{text}: no such file, nor a model name (known: {', '.join(known_names())}; "
                             "python -m glama_deploy.weights list)")
        return path
    if not entry.downloadable:
        return _bundled(entry)
    cached = cache.cached_weights(entry.name)
    if cached is not None:
        return cached
    return get_model(entry.name, offline=offline, progress=progress)
