"""Parse (and build) the exported ONNX with a real TensorRT ONNX parser.

``check_with_parser(onnx_path)`` uses whichever is importable: ``tensorrt`` or ``tensorrt_rtx``
(pip ``tensorrt-rtx``, whose parser and builder run without a GPU, so this runs in CI). Steps:

1. ``OnnxParser.supports_model_v2``: unsupported node ranges are reported with their op names;
2. ``parse`` into a fresh strongly typed network (parser errors name node, op and reason);
3. a build with a dynamic optimization profile (1x256x256 .. 1x2048x2048 by default). TensorRT
   proper needs a CUDA GPU to build, so there it is skipped (and says so) without one.

Passing with TensorRT-RTX proves the graph's ops, shapes and dynamic dims are accepted by NVIDIA's
ONNX parser and builder; it is a proxy for, not a proof of, TensorRT 10/11 on a data-center GPU.
Raises :class:`export.check.CheckError` on failure.
"""

from __future__ import annotations

import time
from pathlib import Path

from glama_deploy.engines.base import EngineError
from glama_deploy.engines.tensorrt_ import cuda_device_name, get_logger, import_tensorrt

from .check import CheckError
from .tensorrt import Profile, make_profile, parser_errors


def unsupported_node_ranges(nodes: list[tuple[str, str]], subgraphs: list[tuple[list[int], bool]],
                            max_names: int = 5) -> list[dict]:
    """Contiguous ranges of the nodes the parser cannot take.

    ``nodes``: (name, op_type) per ONNX node in graph order; ``subgraphs``: (node indices,
    supported) as ``supports_model_v2`` reports them. The unsupported nodes are those in no
    subgraph (the partitioning cuts them out); if every node is in some subgraph, the nodes of the
    subgraphs marked unsupported. Each range: first, last, ops, names."""
    covered = {i for idx, _ in subgraphs for i in idx}
    bad = [i for i in range(len(nodes)) if i not in covered]
    if not bad:
        bad = sorted({i for idx, supported in subgraphs if not supported for i in idx})
    ranges: list[list[int]] = []
    for i in bad:
        if ranges and ranges[-1][-1] == i - 1:
            ranges[-1].append(i)
        else:
            ranges.append([i])
    out = []
    for r in ranges:
        ops = sorted({nodes[i][1] for i in r})
        names = [nodes[i][0] for i in r[:max_names]] + (["..."] if len(r) > max_names else [])
        out.append({"first": r[0], "last": r[-1], "ops": ops, "names": names})
    return out


def format_ranges(ranges: list[dict]) -> str:
    return "; ".join(f"nodes {r['first']}-{r['last']} [{', '.join(r['ops'])}] ({', '.join(r['names'])})"
                     for r in ranges)


def _node_list(path: Path) -> list[tuple[str, str]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [(n.name or f"{n.op_type}_{i}", n.op_type) for i, n in enumerate(model.graph.node)]


def check_with_parser(onnx_path: str | Path, *, backend: str | None = None, build: bool = True,
                      profile: Profile | None = None) -> dict:
    """Parser proof for ``onnx_path`` (see module docstring). ``backend``: 'tensorrt' or
    'tensorrt_rtx' (default: the first importable). Returns a JSON-able report."""
    path = Path(onnx_path)
    if not path.is_file():
        raise CheckError(f"{path}: ONNX model not found")
    gpu = cuda_device_name(0)
    # TensorRT proper cannot even create a builder without a GPU: there, prefer TensorRT-RTX
    order = ("tensorrt", "tensorrt_rtx") if gpu else ("tensorrt_rtx", "tensorrt")
    try:
        trt, name = import_tensorrt(backend, allow=order)
    except EngineError as e:
        raise CheckError(f"no TensorRT ONNX parser to check with: {e} (tensorrt-rtx runs without a GPU)") from None
    profile = profile or make_profile()
    data = path.read_bytes()
    logger = get_logger(trt)
    logger.clear()
    try:
        builder = trt.Builder(logger)
    except Exception as e:  # noqa: BLE001 - TensorRT raises plain RuntimeError/TypeError here
        builder, why = None, f"{type(e).__name__}: {e}"
    else:
        why = "; ".join(logger.errors[-2:])
    if builder is None:
        raise CheckError(f"{name} {trt.__version__} cannot create a builder ({why or 'no message'}); TensorRT "
                         "needs a CUDA GPU even to parse: pip install tensorrt-rtx for a check without one")
    report: dict = {"backend": name, "version": trt.__version__, "model": str(path)}

    # 1. which nodes the parser supports (this also fills the network it was given)
    if hasattr(trt.OnnxParser, "supports_model_v2"):
        probe_net = builder.create_network(0)  # keep a reference: the parser does not own it
        parser = trt.OnnxParser(probe_net, logger)
        t0 = time.perf_counter()
        supported = bool(parser.supports_model_v2(data, str(path)))
        subgraphs = [(list(parser.get_subgraph_nodes(i)), bool(parser.is_subgraph_supported(i)))
                     for i in range(parser.num_subgraphs)]
        report["supports_model_v2"] = {"supported": supported, "subgraphs": len(subgraphs),
                                       "seconds": round(time.perf_counter() - t0, 2)}
        if not supported:
            ranges = unsupported_node_ranges(_node_list(path), subgraphs)
            errs = parser_errors(parser)
            report["supports_model_v2"].update(unsupported=ranges, errors=errs)
            raise CheckError(f"{path}: {name} {trt.__version__} does not support the graph: unsupported "
                             f"{format_ranges(ranges)}" + (f"; parser: {' | '.join(errs[:3])}" if errs else ""))
        del parser, probe_net
    else:
        report["supports_model_v2"] = {"skipped": f"{name} {trt.__version__} has no supports_model_v2"}

    # 2. parse into a fresh network
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data, str(path)):
        raise CheckError(f"{path}: {name} {trt.__version__} ONNX parser failed: "
                         + " | ".join(parser_errors(parser) or logger.errors[-3:]))
    io = {}
    for t in [network.get_input(i) for i in range(network.num_inputs)] + \
             [network.get_output(i) for i in range(network.num_outputs)]:
        io[t.name] = {"shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1]}
    report["parse"] = {"layers": network.num_layers, "io": io}

    # 3. build with a dynamic profile (TensorRT proper needs a GPU for this)
    if not build:
        report["build"] = {"ran": False, "reason": "build=False"}
        return report
    if name == "tensorrt" and gpu is None:
        report["build"] = {"ran": False, "reason": "TensorRT needs a CUDA GPU to build; none found"}
        return report
    config = builder.create_builder_config()
    opt = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        t = network.get_input(i)
        opt.set_shape(t.name, *profile.input_shapes(int(t.shape[1])))
    config.add_optimization_profile(opt)
    logger.clear()
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise CheckError(f"{path}: {name} {trt.__version__} builder failed with profile {profile}: "
                         + ("; ".join(logger.errors[-3:]) or "no message"))
    report["build"] = {"ran": True, "profile": profile.to_dict(), "plan_bytes": serialized.nbytes,
                       "seconds": round(seconds, 2), "gpu": gpu}
    return report
