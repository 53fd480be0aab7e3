"""Named models: ``python -m glama_deploy.weights get|list|path|rm``.

  python -m glama_deploy.weights list                 the registry, and what is in the cache
  python -m glama_deploy.weights get big-lama         download, verify, convert (once)
  python -m glama_deploy.weights get big-lama --fp16  the same at half the size
  python -m glama_deploy.weights get big-lama --from-file big-lama.zip   a file fetched by hand
  python -m glama_deploy.weights path big-lama        print the cached file (exit 1 if absent)
  python -m glama_deploy.weights rm big-lama          delete it from the cache

After ``get``, ``--weights big-lama`` works in glama_deploy.infer, export.onnx, glama_deploy.triton
build-repo, benchmarks/run.py and ``training.train --set model.init_weights=big-lama``; they also
fetch a name on first use unless ``--offline`` or GLAMA_OFFLINE=1.
Cache: $GLAMA_HOME, else $XDG_CACHE_HOME/glama-deploy, else ~/.cache/glama-deploy.
Downloads resume (HTTP Range) and are checked against the registry's size and sha256 (or, where
none is published, the sha256 of the first download). A URL can be overridden with
GLAMA_MODEL_URL_<NAME> (e.g. GLAMA_MODEL_URL_BIG_LAMA=https://mirror/big-lama.zip); the checks still apply.
Exit codes: 0 ok, 2 bad input or a failed download (one line), 1 other failure, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError, WeightsError
from . import cache
from .manager import entry_or_error, get_model
from .registry import REGISTRY, known_names


def _mb(n: int | None) -> str:
    return f"{n / 1e6:.0f} MB" if n else "-"


def _list(args) -> int:
    rows = []
    for name in known_names():
        e = REGISTRY[name]
        files = [str(p) for p in (cache.weights_file(name), cache.weights_file(name, True)) if p.is_file()]
        rows.append({"name": name, "config": e.config, "parameters": e.parameters, "format": e.format,
                     "download_size": e.size, "sha256": e.sha256, "licence": e.licence,
                     "url": e.urls[0] if e.urls else None, "cached": files if e.downloadable else ["bundled"],
                     "good_at": e.good_at})
    if args.json:
        print(json.dumps({"cache": str(cache.cache_root()), "models": rows}, indent=2))
        return 0
    print(f"{'name':<12} {'config':<10} {'params':>11} {'download':>9}  {'licence':<21} cached")
    for r in rows:
        print(f"{r['name']:<12} {r['config']:<10} {r['parameters']:>11,} {_mb(r['download_size']):>9}  "
              f"{r['licence']:<21} {', '.join(r['cached']) or 'no'}")
    print(f"cache: {cache.cache_root()}", file=sys.stderr)
    return 0


def _get(args) -> int:
    path = get_model(args.name, fp16=args.fp16, force=args.force, offline=args.offline or None,
                     progress=not args.quiet, from_file=args.from_file)
    if args.json:
        print(json.dumps({"name": args.name, "path": str(path), "source": cache.read_source(args.name)}, indent=2))
    else:
        print(path)
    return 0


def _path(args) -> int:
    e = entry_or_error(args.name)
    if not e.downloadable:
        from ..bundled import DEFAULT_WEIGHTS

        print(DEFAULT_WEIGHTS)
        return 0
    path = cache.weights_file(args.name, args.fp16)
    if not path.is_file():
        print(f"{args.name}: not in the cache (python -m glama_deploy.weights get {args.name}"
              f"{' --fp16' if args.fp16 else ''})", file=sys.stderr)
        return 1
    print(path)
    return 0


def _rm(args) -> int:
    e = entry_or_error(args.name)
    if not e.downloadable:
        raise InputError(f"{args.name}: the bundled model is part of the package, not of the cache")
    with cache.locked(args.name):
        removed = cache.remove(args.name)
    if args.forget_sha256:
        cache.forget_sha256(args.name)
    for p in removed:
        print(f"removed {p}", file=sys.stderr)
    if not removed:
        print(f"{args.name}: nothing in the cache", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m glama_deploy.weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="the registry and the cache")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("get", help="download, verify and convert a named model (once)")
    p.add_argument("name")
    p.add_argument("--fp16", action="store_true", help="write the generator in fp16 (half the size)")
    p.add_argument("--force", action="store_true",
                   help="download again; the cached file is replaced only by a verified one")
    p.add_argument("--from-file", metavar="FILE", help="use this archive/checkpoint (fetched by hand) "
                   "instead of the network; it is checked like a download")
    p.add_argument("--offline", action="store_true", help="never touch the network (also GLAMA_OFFLINE=1)")
    p.add_argument("--json", action="store_true", help="print the path and the source record as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("path", help="print the cached file of a name")
    p.add_argument("name")
    p.add_argument("--fp16", action="store_true")
    p = sub.add_parser("rm", help="delete a name's files (and partial downloads) from the cache")
    p.add_argument("name")
    p.add_argument("--forget-sha256", action="store_true",
                   help="also forget the sha256 recorded at its first download (models without a published one)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"list": _list, "get": _get, "path": _path, "rm": _rm}[args.command](args)
    except (InputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: a partial download is kept and resumed next time", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"error: {e.filename or ''} {e.strerror or e}".strip(), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
