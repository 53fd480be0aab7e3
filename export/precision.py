"""Which parts of the exported generator stay fp32 when the rest runs in fp16/bf16.

Pure onnx/numpy logic, usable (and tested) without TensorRT:

- :func:`select_fp32_nodes` picks the ONNX nodes that must stay fp32: the whole FourierUnit (the
  DFT-as-matmul: Range/Cos/Sin basis construction, the MatMuls and the real/imag combination, and
  the spectral 1x1 conv) plus the normalisation nodes. The exporter tags every node with its torch
  module scope (``namespace`` metadata); a graph without that metadata falls back to op patterns.
- :func:`select_fp32_layers` maps those nodes onto TensorRT layers (``[ONNX Layer: name]``
  metadata, else the layer name) for the weakly typed build (TensorRT 10: ``layer.precision``).
- :func:`to_mixed_precision` rewrites the graph into an explicitly typed mixed-precision ONNX
  (fp16/bf16 weights and Casts at the boundaries, fp32 I/O) for a strongly typed build: the only
  way on TensorRT 11 and TensorRT-RTX, which removed the precision builder flags.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

SPECTRAL_MODULES = ("FourierUnit",)
# the prefill pyramid of prefill generators: its mean colour sums every pixel (fp16 overflows)
PREFILL_MODULES = ("PyramidFill",)
SPECTRAL_OPS = frozenset({"MatMul", "Cos", "Sin", "Range", "DFT", "STFT"})
NORM_OPS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization",
                      "GroupNormalization"})
# pattern fallback: ops that combine the MatMul outputs (real/imag parts) inside the DFT
_COMBINE_OPS = frozenset({"Neg", "Add", "Sub"})
# pattern fallback: ops between Cos/Sin and the MatMul they feed (basis scaling / reshaping)
_BASIS_OPS = frozenset({"Mul", "Div", "Neg", "Unsqueeze", "Reshape", "Cast", "Expand"})
# ops whose input is only inspected for its shape: never cast
_SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# inputs that must stay float32 whatever the node's precision (op -> input indices)
_FP32_ONLY_INPUTS = {"Resize": {1, 2}}
# TensorRT layer types a precision constraint makes no sense on
_NO_PRECISION_LAYER_TYPES = frozenset({"CONSTANT", "SHAPE", "ASSERTION", "CAST", "IDENTITY"})
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: ([^\]]+)\]")

LOW_PRECISIONS = ("fp16", "bf16")


@dataclass(frozen=True)
class NodeInfo:
    """One ONNX node as the selection sees it."""

    name: str
    op_type: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    scope: str = ""  # torch module path with class names ('namespace' metadata of the exporter)


@dataclass(frozen=True)
class LayerInfo:
    """One TensorRT network layer: name, type name (e.g. 'MATRIX_MULTIPLY'), metadata."""

    name: str
    type: str
    metadata: str = ""
    float_output: bool = True  # at least one output is a float tensor


def node_infos(model) -> list[NodeInfo]:
    """NodeInfo records of a ModelProto's main graph (in graph order)."""
    out = []
    for i, n in enumerate(model.graph.node):
        meta = {p.key: p.value for p in n.metadata_props}
        scope = meta.get("namespace") or meta.get("pkg.torch.onnx.class_hierarchy", "")
        out.append(NodeInfo(n.name or f"{n.op_type}_{i}", n.op_type, tuple(n.input), tuple(n.output), scope))
    return out


def _nodes_by_scope(nodes: Sequence[NodeInfo], modules: Sequence[str] = SPECTRAL_MODULES) -> set[str]:
    chosen = {n.name for n in nodes if any(m in n.scope for m in modules)}
    if not chosen:
        return chosen
    # nodes the exporter's optimiser added without metadata (e.g. a Cast) follow their producers
    producer = {o: n.name for n in nodes for o in n.outputs}
    for n in nodes:
        if n.scope or n.name in chosen:
            continue
        srcs = [producer[i] for i in n.inputs if i in producer]
        if srcs and all(s in chosen for s in srcs):
            chosen.add(n.name)
    return chosen


def _spectral_by_pattern(nodes: Sequence[NodeInfo]) -> set[str]:
    """DFT-as-matmul without scope metadata: seeds (MatMul/Cos/Sin/Range/DFT), the basis scaling
    between Cos/Sin and the MatMuls, the Neg/Add/Sub combining MatMul outputs, and everything these
    read that is computed from tensor shapes only (the basis construction: Range, Floor, Sqrt...)."""
    by_name = {n.name: n for n in nodes}
    producer = {o: n.name for n in nodes for o in n.outputs}
    consumers: dict[str, list[str]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n.name)
    shape_derived: set[str] = set()  # nodes whose value depends on input shapes only, not data
    for n in nodes:
        srcs = [producer[i] for i in n.inputs if i in producer]
        if n.op_type in _SHAPE_ONLY_OPS or (srcs and all(s in shape_derived for s in srcs)):
            shape_derived.add(n.name)
    chosen = {n.name for n in nodes if n.op_type in SPECTRAL_OPS}
    for start, allowed in (([n.name for n in nodes if n.op_type in ("Cos", "Sin")], _BASIS_OPS),
                           ([n.name for n in nodes if n.op_type == "MatMul"], _COMBINE_OPS)):
        stack = list(start)  # Cos/Sin -> scaling -> MatMul; MatMul -> Neg/Add/Sub
        while stack:
            for o in by_name[stack.pop()].outputs:
                for c in consumers.get(o, []):
                    if c not in chosen and by_name[c].op_type in allowed:
                        chosen.add(c)
                        stack.append(c)
    stack = list(chosen)  # the shape-only computations feeding any of them
    while stack:
        for i in by_name[stack.pop()].inputs:
            p = producer.get(i)
            if p and p not in chosen and p in shape_derived and by_name[p].op_type not in _SHAPE_ONLY_OPS:
                chosen.add(p)
                stack.append(p)
    return chosen


def select_fp32_nodes(nodes: Sequence[NodeInfo], keep_norm: bool = True) -> dict[str, str]:
    """ONNX node name -> why it stays fp32 ('spectral', 'spectral-pattern', 'prefill' or 'norm')."""
    chosen: dict[str, str] = {}
    if keep_norm:
        chosen.update({n.name: "norm" for n in nodes if n.op_type in NORM_OPS})
    spectral = _nodes_by_scope(nodes)
    reason = "spectral"
    if not spectral:
        spectral, reason = _spectral_by_pattern(nodes), "spectral-pattern"
    chosen.update({name: reason for name in spectral})
    chosen.update({name: "prefill" for name in _nodes_by_scope(nodes, PREFILL_MODULES)})
    return chosen


def layer_onnx_node(layer: LayerInfo, node_names: Collection[str]) -> str | None:
    """The ONNX node a TensorRT layer came from: ``[ONNX Layer: X]`` metadata (TensorRT >= 10),
    else the layer name itself or its longest node-name prefix (parser helpers ``X_1`` ...)."""
    m = _ONNX_LAYER_RE.search(layer.metadata or "")
    if m and m.group(1) in node_names:
        return m.group(1)
    if layer.name in node_names:
        return layer.name
    best = None
    for n in node_names:
        if layer.name.startswith(n + "_") and (best is None or len(n) > len(best)):
            best = n
    return best


def select_fp32_layers(layers: Sequence[LayerInfo], fp32_nodes: Collection[str]) -> list[str]:
    """Names of the layers to constrain to fp32: from an fp32 node, with a float output, and of a
    type a precision means something for (not constants, shapes, casts, identities)."""
    fp32_nodes = set(fp32_nodes)
    out = []
    for layer in layers:
        if layer.type in _NO_PRECISION_LAYER_TYPES or not layer.float_output:
            continue
        if layer_onnx_node(layer, fp32_nodes) is not None:
            out.append(layer.name)
    return out


def _tensor_types(model) -> dict[str, int]:
    import onnx

    try:
        typed = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=False)
    except Exception:  # onnx raises InferenceError and friends; fall back to what is declared
        typed = model
    g = typed.graph
    types = {}
    for v in list(g.value_info) + list(g.input) + list(g.output):
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for t in g.initializer:
        types[t.name] = t.data_type
    return types


def _to_low_array(arr: np.ndarray, low: str) -> np.ndarray:
    if low == "fp16":
        finfo = np.finfo(np.float16)
        return np.clip(arr, finfo.min, finfo.max).astype(np.float16)
    import ml_dtypes

    return arr.astype(ml_dtypes.bfloat16)


def to_mixed_precision(model, fp32_nodes: Collection[str], low: str = "fp16"):
    """Copy of ``model`` where every float computation outside ``fp32_nodes`` runs in ``low``.

    Float initializers read by low-precision nodes get a converted copy; a Cast is inserted once
    per tensor wherever a value crosses between the two regions; graph inputs and outputs stay
    float32. Integer/shape computations are untouched. The result passes onnx.checker.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if low not in LOW_PRECISIONS:
        raise ValueError(f"low precision must be one of {LOW_PRECISIONS}, got {low!r}")
    low_type = TensorProto.FLOAT16 if low == "fp16" else TensorProto.BFLOAT16
    FLOAT = TensorProto.FLOAT  # noqa: N806
    model = copy.deepcopy(model)
    g = model.graph
    types = _tensor_types(model)
    inits = {t.name: t for t in g.initializer}
    fp32_nodes = set(fp32_nodes)
    low_tensors: set[str] = set()  # float tensors now carried in the low type
    to_low: dict[str, str] = {}
    to_fp32: dict[str, str] = {}
    low_inits: dict[str, str] = {}
    new_nodes = []
    new_inits = []

    def cast(src: str, to: int, cache: dict, suffix: str) -> str:
        if src not in cache:
            dst = f"{src}__{suffix}"
            new_nodes.append(helper.make_node("Cast", [src], [dst], name=f"{dst}__cast", to=to))
            cache[src] = dst
        return cache[src]

    def low_init(name: str) -> str:
        if name not in low_inits:
            arr = numpy_helper.to_array(inits[name])
            t = numpy_helper.from_array(_to_low_array(arr, low), f"{name}__{low}")
            new_inits.append(t)
            low_inits[name] = t.name
        return low_inits[name]

    for i, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{i}"
        if node.op_type in _SHAPE_ONLY_OPS:
            new_nodes.append(node)
            continue
        if name in fp32_nodes:
            for k, t in enumerate(node.input):
                if t in low_tensors:
                    node.input[k] = cast(t, FLOAT, to_fp32, "fp32")
            new_nodes.append(node)
            continue
        keep32 = _FP32_ONLY_INPUTS.get(node.op_type, set())
        for k, t in enumerate(node.input):
            if not t or types.get(t) != FLOAT:
                continue
            if k in keep32:
                if t in low_tensors:
                    node.input[k] = cast(t, FLOAT, to_fp32, "fp32")
            elif t in low_tensors:
                pass
            elif t in inits:
                node.input[k] = low_init(t)
            else:  # graph input or output of an fp32 node
                node.input[k] = cast(t, low_type, to_low, low)
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = low_type
            elif node.op_type in ("Constant", "ConstantOfShape") and a.name == "value" \
                    and a.t.data_type == FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(_to_low_array(numpy_helper.to_array(a.t), low)))
        for o in node.output:
            if types.get(o) == FLOAT:
                low_tensors.add(o)
        new_nodes.append(node)

    # graph outputs stay float32: the low producer writes <out>__low, a final Cast restores <out>
    for out in g.output:
        if out.name in low_tensors:
            renamed = f"{out.name}__{low}"
            for n in new_nodes:
                for k, t in enumerate(n.output):
                    if t == out.name:
                        n.output[k] = renamed
                for k, t in enumerate(n.input):
                    if t == out.name:
                        n.input[k] = renamed
            new_nodes.append(helper.make_node("Cast", [renamed], [out.name], name=f"{out.name}__cast_out",
                                              to=FLOAT))

    used = {t for n in new_nodes for t in n.input}
    kept_inits = [t for t in g.initializer if t.name in used] + new_inits
    del g.node[:]
    g.node.extend(new_nodes)
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.value_info[:]  # element types changed; shape inference recomputes them
    for key, value in (("mixed_precision", low), ("fp32_nodes", str(len(fp32_nodes)))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return onnx.shape_inference.infer_shapes(model)
