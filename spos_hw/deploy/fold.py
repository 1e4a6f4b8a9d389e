"""Graph rewrites of Q/DQ exports: pre-quantized weights, and BatchNorm folded into quantized convs.

``prequantize_weights``: every weight chain ``Q(W) [-> Clip] -> DQ`` on a constant ``W`` becomes
``DQ(Wq)`` with ``Wq`` the integer initializer, computed with the ONNX formula (true float32
division, round half to even, saturate, clip), so the values are bit for bit what ORT computed.

``fold_batchnorm``: ``Conv(x, DQ(Wq, s)) -> BatchNormalization`` becomes
``Conv(x, DQ(sign(k) Wq, s |k|), b)`` with ``k = gamma / sqrt(var + eps)`` per output channel and
``b = beta - mean k``: the integers stay integers (sign moved into them), so ORT sees the
DQ -> Conv pattern it turns into integer kernels. A conv is left alone where a flipped sign
would leave the container (the most negative level times -1). The result equals the unfolded
net up to float rounding (the BN multiply moves into the scale); ``spos_hw.deploy.verify``
measures what that costs in quantization steps.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

_RANGES = {"INT8": (-128, 127), "UINT8": (0, 255), "INT4": (-8, 7), "UINT4": (0, 15)}


def _constants(graph) -> dict:
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def graph_index(graph) -> tuple[dict, dict, dict]:
    """Constants by name, the producer of each tensor, and the consumers of each tensor."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return _constants(graph), producer, consumers


def _qtype(node, consts) -> str:
    import onnx

    if len(node.input) > 2 and node.input[2] in consts:
        return _np_name(consts[node.input[2]])
    attr = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
    return onnx.TensorProto.DataType.Name(attr) if attr else "UINT8"


def _np_name(a: np.ndarray) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(onnx.helper.np_dtype_to_tensor_dtype(a.dtype))


def _quantize(w: np.ndarray, scale: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    """ONNX QuantizeLinear (zero point 0): ``saturate(round_half_even(w / scale))``, in float32."""
    shape = [1] * w.ndim
    shape[axis] = -1
    s = scale.astype(np.float32).reshape(shape) if scale.ndim else scale.astype(np.float32)
    return np.clip(np.rint(w.astype(np.float32) / s), lo, hi).astype(np.int64)


def _int_tensor(name: str, q: np.ndarray, qtype: str):
    import onnx

    dtype = getattr(onnx.TensorProto, qtype)
    return onnx.helper.make_tensor(name, dtype, list(q.shape), q.astype(np.int64).ravel().tolist())


def prequantize_weights(model) -> int:
    """Replace ``Q(W)[->Clip]->DQ`` on constant weights by ``DQ(integer W)`` in place; returns how many."""
    g = model.graph
    consts, producer, consumers = graph_index(g)
    graph_outputs = {o.name for o in g.output}
    drop, new_inits, count = [], [], 0
    for dq in list(g.node):
        if dq.op_type != "DequantizeLinear":
            continue
        src = producer.get(dq.input[0])
        clip = None
        if src is not None and src.op_type == "Clip":
            clip, src = src, producer.get(src.input[0])
        if src is None or src.op_type != "QuantizeLinear" or src.input[0] not in consts:
            continue
        if any(c is not dq for c in consumers.get(src.output[0], [])) or src.output[0] in graph_outputs:
            continue
        if clip is not None and any(c is not dq for c in consumers.get(clip.output[0], [])):
            continue
        scale = consts.get(src.input[1])
        zp = consts.get(src.input[2]) if len(src.input) > 2 and src.input[2] else None
        if scale is None or (zp is not None and np.any(zp != 0)):
            continue
        qtype = _np_name(zp) if zp is not None else _qtype(src, consts)
        if qtype not in _RANGES:
            continue
        lo, hi = _RANGES[qtype]
        if clip is not None:
            lo, hi = int(consts[clip.input[1]]), int(consts[clip.input[2]])
        axis = next((a.i for a in src.attribute if a.name == "axis"), 1)
        q = _quantize(consts[src.input[0]], scale, axis if scale.ndim else 0, lo, hi)
        name = f"{src.input[0]}_quantized"
        new_inits.append(_int_tensor(name, q, qtype))
        dq.input[0] = name
        drop += [src] + ([clip] if clip is not None else [])
        count += 1
    for n in drop:
        g.node.remove(n)
    g.initializer.extend(new_inits)
    _prune_initializers(g)
    return count


def fold_batchnorm(model, only: set[str] | None = None) -> int:
    """Pre-quantize weights, then fold each ``Conv(DQ(int W)) -> BatchNormalization``; returns folds."""
    import onnx
    from onnx import numpy_helper

    prequantize_weights(model)
    g = model.graph
    consts, producer, consumers = graph_index(g)
    inits = {t.name: t for t in g.initializer}
    folded = 0
    for conv in list(g.node):
        if conv.op_type != "Conv" or (len(conv.input) > 2 and conv.input[2]) or (only is not None and conv.name not in only):
            continue
        users = consumers.get(conv.output[0], [])
        dq = producer.get(conv.input[1])
        if len(users) != 1 or users[0].op_type != "BatchNormalization" or dq is None or dq.op_type != "DequantizeLinear":
            continue
        bn = users[0]
        if (
            len(bn.output) != 1
            or not all(i in consts for i in bn.input[1:5])
            or dq.input[0] not in inits
            or dq.input[1] not in consts
        ):
            continue
        if len(consumers.get(dq.output[0], [])) != 1 or len(consumers.get(dq.input[0], [])) != 1:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int64)
        qtype = onnx.TensorProto.DataType.Name(inits[dq.input[0]].data_type)
        scale = consts[dq.input[1]].astype(np.float32)
        if qtype not in ("INT8", "INT4") or scale.ndim != 1 or scale.shape[0] != q.shape[0]:
            continue
        gamma, beta, mean, var = (consts[i].astype(np.float32) for i in bn.input[1:5])
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        k = gamma / np.sqrt(var + np.float32(eps))
        lo = _RANGES[qtype][0]
        if np.any((k < 0)[:, None] & (q.reshape(len(q), -1) == lo)) or np.any(k == 0):
            continue  # a flipped most-negative level does not fit the container
        sign = np.where(k < 0, -1, 1).astype(np.int64).reshape(-1, *[1] * (q.ndim - 1))
        base = dq.input[0]
        inits[base].CopyFrom(_int_tensor(base, q * sign, qtype))
        new_scale = f"{dq.input[1]}_bnfolded_{folded}"
        bias = f"{bn.output[0]}_bias"
        g.initializer.extend(
            [
                numpy_helper.from_array((scale * np.abs(k)).astype(np.float32), new_scale),
                numpy_helper.from_array((beta - mean * k).astype(np.float32), bias),
            ]
        )
        dq.input[1] = new_scale
        while len(conv.input) < 3:
            conv.input.append("")
        conv.input[2] = bias
        stale = conv.output[0]
        conv.output[0] = bn.output[0]
        g.node.remove(bn)
        for vi in [v for v in g.value_info if v.name == stale]:
            g.value_info.remove(vi)
        folded += 1
    _prune_initializers(g)
    log.debug("folded %d BatchNormalization nodes into quantized convs", folded)
    return folded


def _prune_initializers(graph) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


__all__ = ["fold_batchnorm", "graph_index", "prequantize_weights"]
