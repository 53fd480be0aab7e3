"""GLaMa on Triton Inference Server.

  python -m glama_deploy.triton build-repo --out triton_repo [--onnx model.onnx] [--plan model.plan]
  python -m glama_deploy.triton build-repo --flavour cpu --onnx model.onnx --out /tmp/repo
  python -m glama_deploy.triton build-repo --weights big-lama --out triton_repo   (a name: exported once)
  python -m glama_deploy.triton setup-env [--dir .triton-env]
  python -m glama_deploy.triton serve --repo /tmp/repo [--http-port 8000 --grpc-port 8001]

build-repo writes a model repository (config.pbtxt files, python models, model files if given);
the checked-in triton_repo/ is `build-repo --out triton_repo` with the defaults. setup-env makes the
server's own Python environment (nvidia-pytriton's tritonserver, numpy<2, onnxruntime; no torch).
serve starts that tritonserver on a repository built with --flavour cpu (the wheel has the python
backend only), waits until every model is ready, streams the server log, and stops on Ctrl-C.
Details: docs/triton.md. Exit codes: 0 ok, 2 bad input, 1 other failure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict, fields

from ..errors import InputError, WeightsError
from .repo import FLAVOURS, MODES, RepoError, RepoOptions, build_repo
from .server import RepositoryError, ServerEnv, ServerError, TritonServer, default_env_dir, setup_env


def _add_build(sub) -> None:
    ap = sub.add_parser("build-repo", help="write a model repository", description=(
        "Write a Triton model repository. Defaults give the checked-in triton_repo/ (production flavour "
        "for the NGC container); --flavour cpu gives glama_onnx_py + glama_pipeline for the python-only "
        "server of `serve`."))
    d = RepoOptions()
    ap.add_argument("--out", default="triton_repo", help="repository folder (default: triton_repo)")
    ap.add_argument("--flavour", choices=sorted(FLAVOURS), default=d.flavour,
                    help="production: glama_onnx + glama_trt + glama_pipeline; cpu: glama_onnx_py + glama_pipeline")
    ap.add_argument("--onnx", help="exported generator (python -m export.onnx) copied to <model>/1/model.onnx")
    ap.add_argument("--plan", help="TensorRT plan copied to glama_trt/1/model.plan")
    ap.add_argument("--weights", help="instead of --onnx: a model name (big-lama) or .safetensors/.ckpt, "
                    "exported to ONNX once (cached) and copied in")
    ap.add_argument("--offline", action="store_true", help="never download a named model (also GLAMA_OFFLINE=1)")
    ap.add_argument("--models", help="comma-separated subset of the flavour's models")
    ap.add_argument("--generator", default="", help="generator model glama_pipeline calls "
                    "(default: glama_onnx for production, glama_onnx_py for cpu)")
    ap.add_argument("--refine-generator", default="", help="two-stage refine model (default: --generator)")
    ap.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="generator max batch")
    ap.add_argument("--queue-delay-us", type=int, default=d.queue_delay_us, help="dynamic batching delay")
    ap.add_argument("--generator-instances", type=int, default=d.generator_instances)
    ap.add_argument("--pipeline-instances", type=int, default=d.pipeline_instances)
    ap.add_argument("--generator-kind", choices=("gpu", "cpu"), default="",
                    help="instance kind of glama_onnx / glama_onnx_py (default: gpu for production, cpu for cpu)")
    ap.add_argument("--threads", type=int, default=d.threads, help="onnxruntime intra-op threads per instance")
    ap.add_argument("--mode", choices=MODES, default=d.mode, help="pipeline default mode")
    ap.add_argument("--tile", type=int, default=d.tile, help="pipeline default tile size")
    ap.add_argument("--overlap", type=int, default=d.overlap, help="pipeline default tile overlap")
    ap.add_argument("--coarse-size", type=int, default=d.coarse_size, help="pipeline default coarse size")
    ap.add_argument("--max-side", type=int, default=d.max_side,
                    help="largest H or W glama_onnx_py accepts (the pipeline accepts twice that)")
    ap.add_argument("--max-pixels", type=int, default=d.max_pixels,
                    help="budget of batch x H x W per generator request, and of H x W in the pipeline's "
                         "full mode (larger requests get a 400 that names it)")
    ap.add_argument("--glama-deploy-path", default="", help="folder put on the python models' sys.path "
                    "(default: none; glama_deploy must be importable, `serve` sets PYTHONPATH)")
    ap.add_argument("--json", action="store_true", help="print the written files as JSON")


def _build(args) -> int:
    names = {f.name for f in fields(RepoOptions)}
    opts = RepoOptions(**{k: v for k, v in vars(args).items() if k in names and k != "models"},
                       models=tuple(m.strip() for m in args.models.split(",")) if args.models else ())
    onnx = args.onnx
    if args.weights:  # a name or weights file -> its (cached) ONNX export
        if onnx:
            raise RepoError("--onnx and --weights both given: pass one")
        from ..weights.exported import onnx_for

        onnx = onnx_for(args.weights, offline=args.offline or None)
    files = build_repo(args.out, opts, onnx=onnx, plan=args.plan)
    if args.json:
        print(json.dumps({"out": args.out, "options": asdict(opts.resolved()), "files": [str(f) for f in files]},
                         indent=2))
    else:
        print(f"wrote {len(files)} files to {args.out}", file=sys.stderr)
    return 0


def _add_serve(sub) -> None:
    ap = sub.add_parser("serve", help="run tritonserver (from the server environment) on a repository",
                        description="Start the tritonserver of nvidia-pytriton on REPO, wait for readiness, "
                        "stream its log to stderr, stop cleanly on Ctrl-C/SIGTERM. Extra tritonserver "
                        "flags go after `--`.")
    ap.add_argument("--repo", default="triton_repo", help="model repository (build-repo --flavour cpu here)")
    ap.add_argument("--env", help=f"server environment (default: $GLAMA_TRITON_ENV or {default_env_dir()})")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 for every interface)")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002, help="0 disables metrics")
    ap.add_argument("--log-verbose", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness")
    ap.add_argument("--shm-limit-mb", type=int, default=512,
                    help="reload an idle python-backend model whose /dev/shm region outgrew this, to give the "
                    "memory back (the region never shrinks otherwise; needs explicit model control, which "
                    "serve then uses); 0 disables (default: 512)")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="-- extra tritonserver flags")


def _serve(args) -> int:
    extra = tuple(a for a in args.extra if a != "--")
    server = TritonServer(args.repo, args.env, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port or None, log=sys.stderr.write,
                          log_verbose=args.log_verbose, extra_args=extra, shm_limit=max(0, args.shm_limit_mb) << 20)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # explicit: a serve started in the background of a script inherits SIGINT ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        server.start(timeout=args.timeout)
        print(f"ready: http {server.http_url}  grpc {server.grpc_url}  (Ctrl-C stops)", file=sys.stderr, flush=True)
        code = server.proc.wait() if server.proc else 1
        print(f"tritonserver exited with code {code}", file=sys.stderr)
        return 1 if code else 0
    except KeyboardInterrupt:
        print("stopping tritonserver ...", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()


def _add_setup(sub) -> None:
    ap = sub.add_parser("setup-env", help="create the server's Python environment (idempotent)",
                        description="Create a venv with nvidia-pytriton (tritonserver 2.5x, python backend), "
                        "numpy<2, onnxruntime and opencv-python-headless<4.11; no torch. glama_deploy itself "
                        "comes from this checkout through PYTHONPATH when `serve` starts the server.")
    ap.add_argument("--dir", help=f"environment folder (default: $GLAMA_TRITON_ENV or {default_env_dir()})")
    ap.add_argument("--python", help="base interpreter (default: the one running this command)")
    ap.add_argument("--force", action="store_true", help="delete and recreate")
    ap.add_argument("--check", action="store_true", help="only report whether the environment is usable")
    ap.add_argument("--quiet", action="store_true")


def _setup(args) -> int:
    env = ServerEnv.find(args.dir) if args.check else setup_env(args.dir, args.python, args.force, args.quiet)
    print(json.dumps({"dir": str(env.dir), "python": env.version, "numpy": env.numpy,
                      "tritonserver": str(env.binary)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m glama_deploy.triton", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_build(sub)
    _add_serve(sub)
    _add_setup(sub)
    args = ap.parse_args(argv)
    try:
        return {"build-repo": _build, "serve": _serve, "setup-env": _setup}[args.command](args)
    except (RepoError, RepositoryError, InputError, WeightsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
