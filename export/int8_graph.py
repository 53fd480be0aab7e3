"""Exact float rewrites of the exported graph that make its int8 version faster (export.quantize).

Both rewrites change the arithmetic only by float rounding (tests/test_quantize.py compares them):

- :func:`fold_norm_after_add`: an FFC block ends ``BatchNorm(conv_a(x) + conv_b(y))``. BatchNorm is a
  per-channel affine map, so it distributes over the sum and folds into both convolutions. Without
  it each block dequantizes the Add's output for a float BatchNorm and quantizes it again; with it
  the int8 chain runs conv -> add -> relu -> conv.
- :func:`subpixel_upsampling`: a 2x upsampling ``ConvTranspose`` of the decoder (LaMa: kernel 3,
  stride 2, pad 1, output_padding 1; glama-small: kernel 4, stride 2, pad 1) becomes a Conv with four
  times the output channels (one per output phase: a 2x2 window for LaMa's, 3x3 for kernel 4) and a
  DepthToSpace. onnxruntime has no int8 ConvTranspose, and its float one ran at half the speed of its
  convolutions: with the three upsamplers float they took a fifth to a third of the int8 model's time.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def _index(model):
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    for o in model.graph.output:
        consumers[o.name].append(None)  # a graph output counts as a use

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name])

    return inits, producer, consumers, array


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_init(model, inits: dict, name: str, arr: np.ndarray) -> None:
    from onnx import numpy_helper

    new = numpy_helper.from_array(np.ascontiguousarray(arr), name)
    if name in inits:
        inits[name].CopyFrom(new)
    else:
        model.graph.initializer.append(new)
        inits[name] = model.graph.initializer[-1]


def fold_norm_after_add(model) -> int:
    """Fold each ``BatchNormalization(Add(Conv, Conv))`` into the two convs (in place, float32);
    only where the convs, their weights and the Add have no other use. Returns the number folded."""
    inits, producer, consumers, array = _index(model)
    folded = 0
    for bn in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        add = producer.get(bn.input[0])
        if add is None or add.op_type != "Add" or len(consumers[add.output[0]]) != 1 or len(bn.output) != 1:
            continue
        convs = [producer.get(i) for i in add.input]
        if any(c is None or c.op_type != "Conv" or len(consumers[c.output[0]]) != 1 or c.input[1] not in inits
               or len(consumers[c.input[1]]) != 1 or (len(c.input) > 2 and len(consumers[c.input[2]]) != 1)
               for c in convs) or convs[0] is convs[1]:
            continue
        if any(i not in inits for i in bn.input[1:5]):
            continue
        gamma, beta, mean, var = (array(i).astype(np.float64) for i in bn.input[1:5])
        eps = float(_attrs(bn).get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        for k, conv in enumerate(convs):
            w = array(conv.input[1])
            _set_init(model, inits, conv.input[1], (w.astype(np.float64) * scale.reshape(-1, *[1] * (w.ndim - 1)))
                      .astype(np.float32))
            bias = array(conv.input[2]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
            new_bias = bias * scale + (shift if k == 0 else 0.0)
            if len(conv.input) > 2 and conv.input[2]:
                _set_init(model, inits, conv.input[2], new_bias.astype(np.float32))
            else:
                name = conv.input[1] + "_folded_bias"
                _set_init(model, inits, name, np.broadcast_to(new_bias, scale.shape).astype(np.float32))
                while len(conv.input) < 3:
                    conv.input.append("")
                conv.input[2] = name
        # the Add now writes the BatchNorm's output
        out = bn.output[0]
        add.output[0] = out
        model.graph.node.remove(bn)
        folded += 1
    _drop_unused_initializers(model)
    return folded


def _phase_taps(k: int, pad: int) -> tuple[list[dict[int, int]], int, int]:
    """One axis of ConvTranspose(kernel k, stride 2, padding ``pad``) with output 2x the input:
    output 2m+a reads input m+d through tap t = a + pad - 2d. Returns per phase a {window index ->
    tap} over the window d in [lo, hi], and (lo, hi)."""
    offsets = {a: {(a + pad - t) // 2: t for t in range(k) if (a + pad - t) % 2 == 0} for a in (0, 1)}
    lo = min(min(o) for o in offsets.values())
    hi = max(max(o) for o in offsets.values())
    return [{d - lo: t for d, t in offsets[a].items()} for a in (0, 1)], lo, hi


def _is_upsampler(node, attrs: dict, weight: np.ndarray) -> bool:
    """A 2x upsampler: stride 2, square kernel, symmetric padding, output exactly twice the input."""
    if node.op_type != "ConvTranspose" or weight.ndim != 4 or weight.shape[2] != weight.shape[3]:
        return False
    k, pads = weight.shape[2], list(attrs.get("pads", [0] * 4))
    out_pad = list(attrs.get("output_padding", [0, 0]))
    return (list(attrs.get("strides", [1, 1])) == [2, 2] and len(set(pads)) == 1 and len(set(out_pad)) == 1
            and k + out_pad[0] - 2 - 2 * pads[0] == 0 and attrs.get("group", 1) == 1
            and list(attrs.get("dilations", [1, 1])) == [1, 1] and "output_shape" not in attrs
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))


def subpixel_weight(weight: np.ndarray, pad: int) -> tuple[np.ndarray, int, int]:
    """ConvTranspose weight (Cin, Cout, k, k) -> Conv weight (4*Cout, Cin, K, K) and the Conv's
    (leading, trailing) zero padding; output channel ``(2*a + b) * Cout + c`` is phase (a, b) of
    channel c (DepthToSpace DCR order)."""
    cin, cout, k = weight.shape[:3]
    phases, lo, hi = _phase_taps(k, pad)
    size = hi - lo + 1
    out = np.zeros((4, cout, cin, size, size), weight.dtype)
    for a in (0, 1):
        for b in (0, 1):
            for dy, ky in phases[a].items():
                for dx, kx in phases[b].items():
                    out[2 * a + b, :, :, dy, dx] = weight[:, :, ky, kx].T
    return out.reshape(4 * cout, cin, size, size), -lo, hi


def subpixel_upsampling(model) -> int:
    """Replace each stride-2 3x3 ConvTranspose upsampler by Conv(2x2, 4*Cout) + DepthToSpace(2)
    (in place). A Relu right after it moves before the DepthToSpace (a pure permutation), so the
    conv's activation fuses into it. Returns the number replaced."""
    from onnx import helper

    inits, producer, consumers, array = _index(model)
    done = 0
    for node in [n for n in model.graph.node if n.op_type == "ConvTranspose"]:
        if node.input[1] not in inits or len(consumers[node.input[1]]) != 1:
            continue
        weight, attrs = array(node.input[1]), _attrs(node)
        if not _is_upsampler(node, attrs, weight):
            continue
        kernel, lead, trail = subpixel_weight(weight, int(attrs.get("pads", [0])[0]))
        _set_init(model, inits, node.input[1], kernel)
        inputs = [node.input[0], node.input[1]]
        if len(node.input) > 2 and node.input[2]:
            if len(consumers[node.input[2]]) != 1:
                continue
            _set_init(model, inits, node.input[2], np.tile(array(node.input[2]), 4))
            inputs.append(node.input[2])
        out = node.output[0]
        users = consumers[out]
        relu = users[0] if len(users) == 1 and users[0] is not None and users[0].op_type == "Relu" else None
        phases = out + "_phases"
        conv = helper.make_node("Conv", inputs, [phases], name=node.name + "_subpixel",
                                kernel_shape=list(kernel.shape[2:]), pads=[lead, lead, trail, trail], strides=[1, 1])
        conv.metadata_props.extend(node.metadata_props)
        new = [conv]
        if relu is not None:  # Conv -> Relu -> DepthToSpace, writing the Relu's output
            relu_out = relu.output[0]
            relu.input[0], relu.output[0] = phases, phases + "_relu"
            d2s = helper.make_node("DepthToSpace", [phases + "_relu"], [relu_out], name=node.name + "_d2s",
                                   blocksize=2, mode="DCR")
        else:
            d2s = helper.make_node("DepthToSpace", [phases], [out], name=node.name + "_d2s", blocksize=2, mode="DCR")
        d2s.metadata_props.extend(node.metadata_props)
        pos = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for k, n in enumerate(new):
            model.graph.node.insert(pos + k, n)
        if relu is not None:  # the DepthToSpace goes right after the Relu (topological order)
            rpos = list(model.graph.node).index(relu)
            model.graph.node.insert(rpos + 1, d2s)
        else:
            model.graph.node.insert(pos + 1, d2s)
        done += 1
    _drop_value_info(model)
    return done


def _drop_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def _drop_value_info(model) -> None:
    """Shapes inferred before a rewrite may be stale: drop them (shape inference runs again)."""
    del model.graph.value_info[:]


def rewrite_for_int8(model) -> dict[str, int]:
    """Both rewrites, in place; returns how many of each were made."""
    return {"norm_folded_after_add": fold_norm_after_add(model), "subpixel_upsamplers": subpixel_upsampling(model)}
