"""CPU specialization of a symmetric int8 QDQ model (export.quantize) at load: same file, faster
and closer on onnxruntime-CPU.

The file is what TensorRT's explicit quantization takes: int8 activations with zero point 0.
onnxruntime-CPU wants something else, so :func:`specialize_for_cpu` rewrites the loaded graph:

1. :func:`activations_to_uint8`: uint8 activation grids (U8S8 convolutions, fast with VNNI); a
   tensor >= 0 by construction (a Relu output) gets zero point 0 and twice the resolution;
2. :func:`fold_relu_into_quantize`: ``X -> Q -> DQ -> Relu -> Q_relu`` becomes ``X -> Q_relu``
   (a zero point of 0 on uint8 clamps at 0: that *is* the Relu), so the Add before it runs as one
   QLinearAdd writing the Relu's grid instead of a float round trip;
3. :func:`move_data_ops_to_int8`: ``DQ -> Pad|DepthToSpace|... -> Q`` on one grid becomes the op
   on the quantized tensor (4x less memory traffic, no float round trip).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

# ops whose output is nonnegative when their data input is (reflect/zero padding, permutations, ...)
_SIGN_KEEPING = frozenset({"Pad", "DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "MaxPool",
                           "Slice", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _nonnegative_tensors(model) -> set[str]:
    """Tensors that are >= 0 by construction: Relu/Sigmoid outputs, what sign-keeping ops, Concat
    and QuantizeLinear/DequantizeLinear make of them (a Pad must pad with zeros or reflect)."""
    from onnx import helper

    nonneg: set[str] = set()
    for n in model.graph.node:  # graph order is topological
        if n.op_type in ("Relu", "Sigmoid"):
            nonneg.add(n.output[0])
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear") or n.op_type in _SIGN_KEEPING:
            if n.op_type == "Pad":
                attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
                if attrs.get("mode", b"constant") in (b"constant", "constant") and len(n.input) > 2 and n.input[2]:
                    continue  # a constant value we do not inspect
            if n.input and n.input[0] in nonneg:
                nonneg.add(n.output[0])
        elif n.op_type == "Concat" and n.input and all(i in nonneg for i in n.input):
            nonneg.add(n.output[0])
    return nonneg


def activations_to_uint8(model) -> int:
    """Give the int8 *activation* QuantizeLinear/DequantizeLinear pairs of a symmetric QDQ model
    uint8 grids (in place; weights stay int8): onnxruntime-CPU's int8 convolutions are fastest as
    U8S8 (VNNI). The file stays symmetric int8, what TensorRT's explicit quantization requires.

    - a tensor that is >= 0 by construction (a Relu output, padded or reshaped) gets zero point 0
      and half the scale: every value of its int8 grid [0, 127] is on the new grid, which has twice
      the resolution, and onnxruntime then drops the Relu (its zero point is the type's minimum);
    - any other tensor gets zero point 128 and the same scale: q_u8 = q_s8 + 128, the same grid.
    Returns the number of QuantizeLinear/DequantizeLinear nodes changed."""
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nonneg = _nonnegative_tensors(model)
    producer = {o: n for n in model.graph.node for o in n.output}
    new_params: dict[tuple[str, str, bool], tuple[str, str]] = {}

    def params(scale: str, zp: str, positive: bool) -> tuple[str, str]:
        key = (scale, zp, positive)
        if key not in new_params:
            z = numpy_helper.to_array(inits[zp])
            if positive:
                s = numpy_helper.to_array(inits[scale])
                names = (scale + "_u8pos", zp + "_u8pos")
                arrays = (s / np.asarray(2, s.dtype), np.zeros_like(z, dtype=np.uint8))
            else:
                names = (scale, zp + "_u8")
                arrays = (None, (z.astype(np.int16) + 128).astype(np.uint8))
            for name, arr in zip(names, arrays, strict=True):
                if arr is not None and name not in inits:
                    model.graph.initializer.append(numpy_helper.from_array(arr, name))
                    inits[name] = model.graph.initializer[-1]
            new_params[key] = names
        return new_params[key]

    def convertible(n) -> bool:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3 or n.input[0] in inits:
            return False  # a weight's DequantizeLinear stays int8
        zp = inits.get(n.input[2])
        return zp is not None and zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any() \
            and n.input[1] in inits

    changed = 0
    for n in model.graph.node:
        if not convertible(n):
            continue
        # a pair shares one grid: a DequantizeLinear follows its QuantizeLinear's decision
        src = n if n.op_type == "QuantizeLinear" else producer.get(n.input[0])
        if src is None or src.op_type != "QuantizeLinear":
            src = n
        positive = src.op_type == "QuantizeLinear" and src.input[0] in nonneg
        n.input[1], n.input[2] = params(n.input[1], n.input[2], positive)
        changed += 1
    _drop_unused_initializers(model)
    return changed


def _graph_index(model):
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    outputs = {o.name for o in model.graph.output}
    return producer, consumers, outputs


def _only_use(name: str, consumers, outputs) -> object | None:
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and name not in outputs else None


def fold_relu_into_quantize(model) -> int:
    """``X -> QuantizeLinear -> DequantizeLinear -> Relu -> QuantizeLinear(zero point 0, uint8)``
    becomes ``X -> QuantizeLinear(the Relu's grid)`` where the first pair serves only the Relu (in
    place; run after :func:`activations_to_uint8`). Returns the number of Relus removed."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    producer, consumers, outputs = _graph_index(model)
    remove = []
    for relu in [n for n in model.graph.node if n.op_type == "Relu"]:
        dq = producer.get(relu.input[0])
        q_relu = _only_use(relu.output[0], consumers, outputs)
        if dq is None or dq.op_type != "DequantizeLinear" or q_relu is None or q_relu.op_type != "QuantizeLinear":
            continue
        zp = inits.get(q_relu.input[2]) if len(q_relu.input) > 2 else None
        if zp is None or zp.data_type != TensorProto.UINT8 or np.asarray(_array(zp)).any():
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or _only_use(dq.output[0], consumers, outputs) is not relu \
                or _only_use(q.output[0], consumers, outputs) is not dq:
            continue
        q_relu.input[0] = q.input[0]
        remove += [q, dq, relu]
    for n in remove:
        model.graph.node.remove(n)
    return len(remove) // 3


# data movement that maps values to values (no arithmetic): runs on a quantized tensor unchanged
_DATA_OPS = frozenset({"DepthToSpace", "SpaceToDepth", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                       "Flatten", "Slice", "Pad"})


def _same_grid(a, b, inits) -> bool:
    if len(a.input) < 3 or len(b.input) < 3:
        return False
    try:
        sa, sb = _array(inits[a.input[1]]), _array(inits[b.input[1]])
        za, zb = _array(inits[a.input[2]]), _array(inits[b.input[2]])
    except KeyError:
        return False
    return (sa.shape == sb.shape and za.dtype == zb.dtype and np.array_equal(za, zb)
            and np.allclose(sa, sb, rtol=1e-6, atol=0))


def move_data_ops_to_int8(model) -> int:
    """``DQ -> op -> Q`` with op pure data movement (a Pad only when it reflects or repeats edges)
    becomes ``op`` on the quantized tensor, its output feeding the consumers of ``Q`` on the input's
    grid (in place). Returns the number of ops moved."""
    from onnx import helper

    inits = {i.name: i for i in model.graph.initializer}
    producer, consumers, outputs = _graph_index(model)
    remove = []
    for op in [n for n in model.graph.node if n.op_type in _DATA_OPS]:
        if op.op_type == "Pad":
            mode = {a.name: helper.get_attribute_value(a) for a in op.attribute}.get("mode", b"constant")
            if mode not in (b"reflect", b"edge", "reflect", "edge"):
                continue
        dq = producer.get(op.input[0])
        q = _only_use(op.output[0], consumers, outputs)
        if dq is None or dq.op_type != "DequantizeLinear" or q is None or q.op_type != "QuantizeLinear" \
                or dq.input[0] in inits or len(dq.input) < 3 or len(q.input) < 3:
            continue
        readers = consumers.get(q.output[0], [])
        if not _same_grid(dq, q, inits):
            # calibration measured the op's output apart from its input (a percentile of a padded
            # copy differs a little): the values are the input's, so its grid serves the output too
            if q.output[0] in outputs or not readers or any(r.op_type != "DequantizeLinear" for r in readers):
                continue
            for r in readers:
                r.input[1], r.input[2] = dq.input[1], dq.input[2]
        # op reads the quantized tensor; its output takes Q's name so Q's DequantizeLinears read it
        if _only_use(dq.output[0], consumers, outputs) is op:
            remove.append(dq)
        op.input[0] = dq.input[0]
        op.output[0] = q.output[0]
        remove.append(q)
    for n in remove:
        model.graph.node.remove(n)
    _topological_sort(model)
    return sum(1 for n in remove if n.op_type == "QuantizeLinear")


def _topological_sort(model) -> None:
    """Re-order the nodes so each comes after the producers of its inputs (rewrites can break it)."""
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    pending = list(model.graph.node)
    ordered = []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or an undefined input: " + rest[0].name)
        pending = rest
    new = [type(n)() for n in ordered]
    for a, b in zip(new, ordered, strict=True):
        a.CopyFrom(b)
    del model.graph.node[:]
    model.graph.node.extend(new)


def _array(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init)


def specialize_for_cpu(model) -> dict[str, int]:
    """All three rewrites, in place; returns what each changed."""
    done = {"uint8_grids": activations_to_uint8(model), "relus_folded": fold_relu_into_quantize(model),
            "data_ops_in_int8": move_data_ops_to_int8(model)}
    _drop_unused_initializers(model)
    return done


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
