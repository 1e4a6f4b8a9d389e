"""Graph rewrites of Q/DQ exports: pre-quantized weights, and BatchNorm folded into quantized convs.

``prequantize_weights``: every weight chain ``[Min/Max clip ->] Q(W) [-> Clip] -> DQ`` on a
constant ``W`` (and the sign quantizer's ``Where(W >= 0, 1, -1) -> DQ``) becomes ``DQ(Wq)`` with
``Wq`` the integer initializer, computed with the ONNX formula (true float32 division, round half
to even, saturate, clip), so the values are bit for bit what ORT computed. TensorRT reads such a
DQ as a quantized weight (per channel on axis 0).

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


_FOLDABLE = {
    "Identity": lambda a: a,
    "Neg": lambda a: -a,
    "Mul": lambda a, b: (a * b).astype(np.result_type(a, b)),
    "Min": lambda *a: np.minimum.reduce(np.broadcast_arrays(*a)),
    "Max": lambda *a: np.maximum.reduce(np.broadcast_arrays(*a)),
    "Clip": lambda a, lo=None, hi=None: np.clip(a, lo, hi).astype(a.dtype),
    "Reshape": lambda a, shape: a.reshape([a.shape[i] if d == 0 else d for i, d in enumerate(shape.astype(int))]),
    "GreaterOrEqual": lambda a, b: a >= b,
    "Where": lambda c, a, b: np.where(c, a, b).astype(np.result_type(a, b)),
}
"""Element-wise ops a weight chain is made of, evaluated in numpy at their ONNX dtype (float32)."""


def _evaluate(name: str, consts: dict, producer: dict, depth: int = 0) -> np.ndarray | None:
    """The value of ``name`` when it is a constant or a small chain of ``_FOLDABLE`` ops on constants."""
    if name in consts:
        return consts[name]
    node = producer.get(name)
    if node is None or node.op_type not in _FOLDABLE or depth > 16 or len(node.output) != 1:
        return None
    args = []
    for i in node.input:
        if not i:
            args.append(None)
            continue
        v = _evaluate(i, consts, producer, depth + 1)
        if v is None:
            return None
        args.append(v)
    return np.asarray(_FOLDABLE[node.op_type](*args))


def prequantize_weights(model) -> int:
    """Replace every DQ's constant-rooted integer input by an integer initializer in place; returns how many.

    Covers ``Q(W) -> DQ`` where ``W`` is a constant or a float clip chain on one
    (``Min(Max(W, lo), hi)``, ``Clip``), the older ``Q(W) -> integer Clip -> DQ``, and the
    sign quantizer's ``Where(W >= 0, 1, -1) -> DQ`` (folded into +-1). Nodes left without
    consumers are removed.
    """
    g = model.graph
    consts, producer, consumers = graph_index(g)
    graph_outputs = {o.name for o in g.output}
    new_inits, count = [], 0
    for dq in list(g.node):
        if dq.op_type != "DequantizeLinear" or dq.input[0] in consts:
            continue
        src = producer.get(dq.input[0])
        if src is None or any(c is not dq for c in consumers.get(dq.input[0], [])) or dq.input[0] in graph_outputs:
            continue
        if src.op_type == "Where":  # the sign quantizer on a constant weight
            q = _evaluate(dq.input[0], consts, producer)
            if q is None or q.dtype != np.int8:
                continue
            name = f"{dq.input[0]}_quantized"
            new_inits.append(_int_tensor(name, q.astype(np.int64), "INT8"))
            dq.input[0] = name
            count += 1
            continue
        clip = None
        if src.op_type == "Clip":
            clip, src = src, producer.get(src.input[0])
            if src is None or any(c is not clip for c in consumers.get(src.output[0], [])):
                continue
        if src.op_type != "QuantizeLinear":
            continue
        w = _evaluate(src.input[0], consts, producer)
        scale = consts.get(src.input[1])
        zp = consts.get(src.input[2]) if len(src.input) > 2 and src.input[2] else None
        if w is None or scale is None or (zp is not None and np.any(zp != 0)):
            continue
        qtype = _np_name(zp) if zp is not None else _qtype(src, consts)
        if qtype not in _RANGES:
            continue
        lo, hi = _RANGES[qtype]
        if clip is not None:
            lo, hi = int(consts[clip.input[1]]), int(consts[clip.input[2]])
        axis = next((a.i for a in src.attribute if a.name == "axis"), 1)
        q = _quantize(w, scale, axis % max(w.ndim, 1) if scale.ndim else 0, lo, hi)
        name = f"{dq.input[0]}_quantized"
        new_inits.append(_int_tensor(name, q, qtype))
        dq.input[0] = name
        count += 1
    g.initializer.extend(new_inits)
    _prune_nodes(g)
    _prune_initializers(g)
    return count


def _prune_nodes(graph) -> None:
    """Remove nodes none of whose outputs is consumed or a graph output (repeatedly)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            graph.node.remove(n)


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
