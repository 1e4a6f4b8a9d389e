"""Post-training INT8 quantization of a float ONNX export, TensorRT-conformant: ``export --precision int8 --calibrate N``.

Every Conv / Gemm / MatMul with a constant weight gets

- its activation input quantized per tensor: ``Q(INT8, zero point 0) -> DQ`` with
  ``scale = amax / 127``, ``amax`` calibrated on N training images by one of ``METHODS``:
  ``max`` (the largest |x| seen), ``percentile`` (the 99.99th percentile of |x|, the default)
  or ``entropy`` (the threshold minimising the KL divergence between the 2048-bin histogram
  of |x| and its 128-level quantization, as TensorRT's entropy calibrator does; the first bin,
  the spike of exact zeros after a ReLU, is set to the second's as in NVIDIA's
  pytorch-quantization, else the thresholds came out at a third of the range and top-1
  agreement fell to 28% on a digits net). The network input keeps its full range (``max``)
  under every method: it is a normalised uint8 image, not a bell-shaped activation;
- its weight pre-quantized per output channel into an INT8 initializer, symmetric
  ``[-127, 127]`` with ``scale = max|w_c| / 127``, then DQ (axis 0 for Conv and ``Gemm`` with
  ``transB=1``; the output axis otherwise).

Zero points are explicit INT8 zeros and nothing sits between a Q and its DQ, so the result
passes ``spos_hw.deploy.trt_check``. Activation statistics come from ONNX Runtime running the
float graph (two passes: the range, then a histogram on it).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from spos_hw.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("max", "percentile", "entropy")
DEFAULT_METHOD = "percentile"
PERCENTILE = 99.99
BINS = 2048
LEVELS = 128
"""Quantized levels of a non-negative histogram in the entropy search (INT8: 0..127)."""


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return method


def _targets(graph) -> list[tuple[Any, int, str, int]]:
    """``(node, weight input index, weight initializer name, channel axis)`` of each quantizable layer."""
    inits = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    out = []
    for n in graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        w = n.input[1]
        if n.op_type == "MatMul" and w not in inits:
            p = producer.get(w)
            if p is not None and p.op_type == "Transpose" and p.input[0] in inits:
                out.append((n, 1, w, 1))  # folded below: W^T is [K, N], output channels on axis 1
            continue
        if w not in inits:
            continue
        if n.op_type == "Conv":
            axis = 0
        elif n.op_type == "Gemm":
            axis = 0 if next((a.i for a in n.attribute if a.name == "transB"), 0) else 1
        else:
            axis = 1
        out.append((n, 1, w, axis))
    return out


def amax_from_histogram(hist: np.ndarray, edge: float, method: str, percentile: float = PERCENTILE) -> float:
    """The clipping threshold of a histogram of |x| over ``[0, edge]`` (``BINS`` bins)."""
    width = edge / len(hist)
    total = hist.sum()
    if total == 0 or edge <= 0:
        return max(edge, 1e-8)
    if method == "percentile":
        cdf = np.cumsum(hist) / total
        i = int(np.searchsorted(cdf, percentile / 100.0))
        return float(min(i + 1, len(hist)) * width)
    return float(_entropy_bin(hist) * width)


def _entropy_bin(hist: np.ndarray) -> int:
    """The bin count ``i`` (>= LEVELS) whose clipped distribution loses least (KL) at LEVELS levels."""
    hist = hist.astype(np.float64)
    hist[0] = hist[1]  # the spike of exact zeros (post-ReLU) would otherwise dominate the divergence
    n = len(hist)
    if n <= LEVELS:
        return n
    best, best_i = np.inf, n
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    for i in range(LEVELS, n + 1):
        p = hist[:i].copy()
        if i < n:
            p[i - 1] += tail[i]
        nz = p > 0
        # merge i bins into LEVELS groups, spread each group's mass over its non-empty bins
        groups = np.minimum((np.arange(i) * LEVELS) // i, LEVELS - 1)
        mass = np.bincount(groups, weights=hist[:i], minlength=LEVELS)
        count = np.bincount(groups, weights=nz.astype(np.float64), minlength=LEVELS)
        q = np.where(nz, mass[groups] / np.maximum(count[groups], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if qs == 0:
            continue
        pn, qn = p[nz] / ps, q[nz] / qs
        kl = float(np.sum(pn * np.log(pn / np.maximum(qn, 1e-12))))
        if kl < best:
            best, best_i = kl, i
    return best_i


def calibrate(model, images: np.ndarray, *, method: str = DEFAULT_METHOD, batch: int = 64, threads: int = 1) -> dict[str, float]:
    """``amax`` per activation tensor feeding a quantizable layer, from ORT runs of the float ``model``."""
    from spos_hw.deploy.verify import ort_session, probe_model, run_batched

    check_method(method)
    names = sorted({n.input[0] for n, *_ in _targets(model.graph)})
    if not names:
        return {}
    graph_inputs = {i.name for i in model.graph.input}
    probed = [n for n in names if n not in graph_inputs]
    sess = ort_session(probe_model(model, probed), threads=threads, level="disable")
    x = np.ascontiguousarray(images, np.float32)
    dim0 = model.graph.input[0].type.tensor_type.shape.dim[0]
    static = dim0.dim_value if dim0.HasField("dim_value") and dim0.dim_value > 0 else None
    if static is not None:
        batch = max(static, (batch // static) * static)

    def batches():
        for i in range(0, len(x), batch):
            outs = run_batched(sess, x[i : i + batch], static)
            vals = dict(zip(probed, outs[1:]))
            vals.update({g: x[i : i + batch] for g in names if g in graph_inputs})
            yield vals

    edge = {n: 0.0 for n in names}
    for vals in batches():
        for n in names:
            edge[n] = max(edge[n], float(np.abs(vals[n]).max()))
    if method == "max":
        return {n: max(e, 1e-8) for n, e in edge.items()}
    hists = {n: np.zeros(BINS, np.int64) for n in names}
    for vals in batches():
        for n in names:
            if edge[n] > 0:
                hists[n] += np.histogram(np.abs(vals[n]), bins=BINS, range=(0.0, edge[n]))[0]
    # the network input is a few fixed levels (a normalised uint8 image: the background is one
    # spike away from 0): histogram methods clip it hard (entropy: 44% of its range on digits,
    # which cost 18 points of top-1), so it keeps its full range
    return {n: edge[n] if n in graph_inputs else amax_from_histogram(hists[n], edge[n], method) for n in names}


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 integers, float32 scales)``: symmetric per channel along ``axis``, ``[-127, 127]``."""
    w = w.astype(np.float32)
    other = tuple(d for d in range(w.ndim) if d != axis)
    amax = np.abs(w).max(axis=other) if other else np.abs(w)
    scale = (np.maximum(amax, 1e-12) / np.float32(127)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model, amax: dict[str, float]) -> int:
    """Quantize every target layer of ``model`` in place (activations from ``amax``); returns how many."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    zp8 = "ptq_zero_point_int8"
    g.initializer.append(helper.make_tensor(zp8, onnx.TensorProto.INT8, [], [0]))
    act_dq: dict[str, str] = {}
    new_nodes: list[tuple[Any, list]] = []  # (insert before this node, nodes)
    count = 0
    for node, wi, wname, axis in _targets(g):
        before = []
        a = node.input[0]
        if a in amax:
            if a not in act_dq:
                s = f"{a}_ptq_scale"
                g.initializer.append(numpy_helper.from_array(np.array(amax[a] / 127.0, np.float32), s))
                before += [
                    helper.make_node("QuantizeLinear", [a, s, zp8], [f"{a}_ptq_q"], name=f"{a}_ptq_Q"),
                    helper.make_node("DequantizeLinear", [f"{a}_ptq_q", s, zp8], [f"{a}_ptq_dq"], name=f"{a}_ptq_DQ"),
                ]
                act_dq[a] = f"{a}_ptq_dq"
            node.input[0] = act_dq[a]
        if wname in inits:
            w = numpy_helper.to_array(inits[wname])
        else:  # MatMul(x, Transpose(W)): fold the transpose into the initializer
            t = producer[wname]
            perm = next((list(at.ints) for at in t.attribute if at.name == "perm"), None)
            w = np.transpose(numpy_helper.to_array(inits[t.input[0]]), perm)
        q, scale = quantize_weight(w, axis)
        base = f"{node.name or wname}_ptq_w"
        g.initializer.extend(
            [
                numpy_helper.from_array(q, f"{base}_int8"),
                numpy_helper.from_array(scale, f"{base}_scale"),
                numpy_helper.from_array(np.zeros(len(scale), np.int8), f"{base}_zp"),
            ]
        )
        before.append(
            helper.make_node(
                "DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zp"], [f"{base}_dq"], name=f"{base}_DQ", axis=axis
            )
        )
        node.input[wi] = f"{base}_dq"
        new_nodes.append((node, before))
        count += 1
    for node, before in new_nodes:
        at = list(g.node).index(node)
        for k, n in enumerate(before):
            g.node.insert(at + k, n)
    from spos_hw.deploy.fold import _prune_initializers, _prune_nodes

    _prune_nodes(g)
    _prune_initializers(g)
    return count


def post_training_int8(model, images: np.ndarray, *, method: str = DEFAULT_METHOD, threads: int = 1) -> dict[str, Any]:
    """Calibrate on ``images`` (normalised float ``[N, C, H, W]``) and quantize ``model`` in place; a summary."""
    if len(images) == 0:
        raise ConfigError("post-training calibration needs at least one image (--calibrate N, N >= 1)")
    amax = calibrate(model, images, method=method, threads=threads)
    layers = insert_qdq(model, amax)
    log.debug("PTQ (%s): %d layers quantized, %d activation tensors", method, layers, len(amax))
    return {"method": method, "images": int(len(images)), "layers": layers, "activation_tensors": len(amax)}


__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "PERCENTILE",
    "amax_from_histogram",
    "calibrate",
    "check_method",
    "insert_qdq",
    "post_training_int8",
    "quantize_weight",
]
