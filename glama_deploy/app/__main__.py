"""Inpaint by drawing in the browser: ``python -m glama_deploy.app``, then open the address it prints.

Open or drop a photo (or pick a bundled sample), paint over what should go, press Run, compare
before/after, download the full-resolution PNG, or keep going on the result. Big images run
through the tiled pipeline (the page says which mode ran); known pixels come back unchanged.

The server listens on 127.0.0.1 only: pass ``--host 0.0.0.0`` to let other machines reach it
(it has no authentication). The page loads nothing from the internet (no CDN, no analytics): it
works offline.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

import numpy as np

from ..bundled import DEFAULT_WEIGHTS
from ..engines import ENGINES
from ..errors import EngineError, InputError, WeightsError
from ..infer import check_device, check_weights_file, guess_engine, make_engine
from ..weights import resolve_weights

try:
    from .server import Limits
except ImportError as _e:  # the [app] extra is missing: one line, not a traceback
    sys.exit(f"error: the app needs the [app] extra ({_e.name} is not installed): pip install -e '.[app]'")


def build_parser() -> argparse.ArgumentParser:
    d = Limits()
    ap = argparse.ArgumentParser(prog="python -m glama_deploy.app", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS),
                    help="generator: .safetensors, LaMa .ckpt, .onnx, or a model name (big-lama: downloaded "
                         f"once; python -m glama_deploy.weights list) (default: bundled {DEFAULT_WEIGHTS.name})")
    ap.add_argument("--offline", action="store_true",
                    help="never download a named model (also GLAMA_OFFLINE=1); a name must be in the cache")
    ap.add_argument("--engine", choices=ENGINES,
                    help="default: from the weights' extension; triton needs --url")
    ap.add_argument("--url", help="triton: server address HOST:PORT (default localhost:8000)")
    ap.add_argument("--protocol", choices=("http", "grpc"), default="http", help="triton protocol")
    ap.add_argument("--model-name", default="glama_onnx", help="triton: model to call")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    ap.add_argument("--threads", type=int, help="CPU threads for torch / onnxruntime")
    ap.add_argument("--host", default="127.0.0.1",
                    help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 = all, "
                         "anyone on the network can then use it)")
    ap.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 = any free port)")
    ap.add_argument("--queue", type=int, default=d.max_queue,
                    help=f"requests that may wait behind the running one (default {d.max_queue}); "
                         "more get 'busy'")
    ap.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / 2**20,
                    help="largest upload, image + mask (default %(default)g MB)")
    ap.add_argument("--max-megapixels", type=float, default=d.max_pixels / 1e6,
                    help="largest image (default %(default)g MP)")
    ap.add_argument("--full-max-megapixels", type=float, default=d.full_max_pixels / 1e6,
                    help="auto mode runs the whole image up to this size, tiles above (default %(default)g MP)")
    ap.add_argument("--tile", type=int, default=d.tile, help="tile size in tiled mode (default %(default)s)")
    ap.add_argument("--verbose", action="store_true", help="log every request")
    return ap


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or InputError naming the problem (port taken, unknown host)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog until the server accepts them
    except OSError as e:
        raise InputError(f"--host {host} --port {port}: cannot listen ({e.strerror or e})") from None
    return sock


def warm_up(engine) -> None:
    """One small call, so the first request does not pay for lazy initialisation."""
    image = np.full((1, 3, 64, 64), 0.5, np.float32)
    mask = np.zeros((1, 1, 64, 64), np.float32)
    mask[..., 24:40, 24:40] = 1
    engine(image, mask)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
                        full_max_pixels=int(args.full_max_megapixels * 1e6), max_queue=args.queue, tile=args.tile)
        if limits.max_queue < 0 or limits.tile < 64 or min(limits.max_upload_bytes, limits.max_pixels) <= 0:
            raise InputError("--queue must be >= 0, --tile >= 64, the size limits > 0")
        sock = bind(args.host, args.port)  # before the model loads: a taken port fails at once
        if args.engine != "triton":  # a model name -> its cached file, fetched on first use
            args.weights = resolve_weights(args.weights, offline=args.offline or None)
            check_weights_file(args.weights)
        args.weights = Path(args.weights)
        if (args.engine or guess_engine(args.weights)) in ("torch", "tensorrt"):
            check_device(args.device)
        engine = make_engine(args, args.weights)
        warm_up(engine)
    except (InputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (EngineError, ValueError) as e:
        print(f"error: engine: {e}", file=sys.stderr)
        return 1

    import uvicorn

    from .server import create_app

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"glama-deploy app on http://{shown}:{port}/  ({engine.describe().get('engine')}; Ctrl-C to stop)",
          flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: other machines can reach this page (no authentication)",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(engine, limits), log_level="info" if args.verbose else "warning",
                            access_log=args.verbose)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
