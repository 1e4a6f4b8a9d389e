"""ONNX lowering of the fake-quant ops: QuantizeLinear + DequantizeLinear (Q/DQ).

The dynamo exporter ignores ``autograd.Function.symbolic``; custom ops are lowered through
``torch.onnx.export(..., dynamo=True, custom_translation_table=translation_table(opset))``.
``spos_hw.deploy.onnx`` merges this table into its own.

The scheme follows TensorRT's explicit-quantization rules (docs/export.md, "TensorRT
conformance") and stays bit-exact with ``fake_quant`` in ONNX Runtime:

- every Q/DQ carries an explicit zero point whose type is the quantized type (ONNX reads a
  missing one as UINT8, TensorRT as INT8); it is INT8 and 0 for every symmetric range that
  fits ``[-128, 127]``;
- a range narrower than INT8 (weights or activations below 8 bits, unsigned ones below 8
  bits) is enforced in float *before* the Q: ``Clip(x, qmin*s, qmax*s)`` per tensor,
  ``Min(Max(x, qmin*s), qmax*s)`` per channel, then ``Q(INT8) -> DQ``. Nothing sits between
  a Q and its DQ. It is exact: a clipped value ``fl(qmax*s)`` divides back to ``qmax`` within
  ``qmax * 2^-23``, far from a rounding tie, and values inside the bounds are untouched;
- constant weights are then pre-quantized by ``spos_hw.deploy.fold.prequantize_weights`` into
  INT8 initializers holding the exact integers (per channel, axis 0) feeding a DQ;
- no INT4/INT2 containers: TensorRT takes INT4 only as Gemm/MatMul weights, and the 4-bit
  integers are exact in INT8 anyway;
- 8-bit unsigned activations ``[0, 255]`` do not fit INT8: they stay UINT8 Q/DQ, exact in ORT
  but refused by ``--check-trt`` (TensorRT has no unsigned quantized type). The ``*-trt``
  spaces quantize every activation on the signed grid, so they never produce them.

The 1-bit sign quantizer is not a rounding of ``x / scale`` (``sign(0) = +1``). Per channel
(weights) it lowers to ``DequantizeLinear(Where(x >= 0, 1, -1) as INT8, scale)``, which
``prequantize_weights`` folds into an INT8 initializer of +-1 (a float ``Where`` on weights
would let ORT fold them into plain constants and fuse the following BN into the conv, moving
low-bit activations across rounding boundaries: measured 3% output error after one 4-bit
layer). Per tensor (activations) it lowers to the float ``Where(x >= 0, s, -s)``: no Q/DQ,
exactly ``+-s``.
fp16/bf16 inputs are cast to float32 around Q/DQ, as the op computes in fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import spos_hw.quant.fake_quant  # noqa: F401  (registers the spos_hw:: ops)
from spos_hw.errors import QuantError

MIN_OPSET = 13
"""Per-axis QuantizeLinear/DequantizeLinear need opset 13."""


def container(qmin: int, qmax: int) -> tuple[str, bool]:
    """``(onnx dtype name, needs_clip)`` for the integer range ``[qmin, qmax]``.

    INT8 whenever the range fits ``[-128, 127]`` (``needs_clip`` when it is narrower); UINT8
    only for ranges that do not (8-bit unsigned).
    """
    if qmin >= -128 and qmax <= 127:
        return "INT8", (qmin, qmax) != (-128, 127)
    return "UINT8", (qmin, qmax) != (0, 255)


def translation_table(opset: int) -> dict[Callable, Callable]:
    """``custom_translation_table`` entries lowering ``spos_hw::fake_quant`` and ``spos_hw::sign_quant``.

    ``opset`` must be the ``opset_version`` of the export.
    """
    if opset < MIN_OPSET:
        raise QuantError(f"quantized models export at opset >= {MIN_OPSET} (per-axis Q/DQ), got {opset}")
    import onnxscript
    from onnxscript import ir

    op = onnxscript.values.Opset("", opset)
    f32 = ir.DataType.FLOAT

    def const(value: Any, dtype: ir.DataType) -> Any:
        return op.Constant(value=ir.tensor(np.asarray(value, dtype=dtype.numpy()), dtype=dtype))

    def to_float(x):
        return (x, None) if x.dtype == ir.DataType.FLOAT else (op.Cast(x, to=ir.DataType.FLOAT), x.dtype)

    def back(y, dtype):
        return y if dtype is None else op.Cast(y, to=dtype)

    def scalar(scale):
        if len(scale.shape or ()) > 0:
            return op.Reshape(scale, const(np.zeros((0,), np.int64), ir.DataType.INT64))
        return scale

    def broadcast(scale, rank: int, axis: int):
        shape = [1] * rank
        shape[axis] = -1
        return op.Reshape(scale, const(np.asarray(shape, np.int64), ir.DataType.INT64))

    def fake_quant(x, scale, qmin: int, qmax: int, zero_point: int, axis: int | None = None, check: bool = True):
        x, dtype = to_float(x)
        per_axis = axis is not None
        name, clip = container(qmin, qmax)
        kind = getattr(ir.DataType, name)
        ax = {"axis": axis} if per_axis else {}
        if not per_axis:
            scale = scalar(scale)
        lo, hi = float(qmin - zero_point), float(qmax - zero_point)
        if clip:  # the op's range, in float, before the Q (nothing between Q and DQ)
            if per_axis:
                rank = len(x.shape)
                sb = broadcast(scale, rank, axis % rank)
                x = op.Min(op.Max(x, op.Mul(sb, const(lo, f32))), op.Mul(sb, const(hi, f32)))
            else:
                x = op.Clip(x, op.Mul(scale, const(lo, f32)), op.Mul(scale, const(hi, f32)))
        n = int(scale.shape[0]) if per_axis else None
        zp = const(np.full(n, zero_point) if per_axis else zero_point, kind)
        q = op.QuantizeLinear(x, scale, zp, **ax)
        return back(op.DequantizeLinear(q, scale, zp, **ax), dtype)

    def sign_quant(x, scale, axis: int | None = None, check: bool = True):
        x, dtype = to_float(x)
        zero = const(np.float32(0), f32)
        if axis is None:  # activations: float select, exactly +-s (no Q/DQ)
            s = scalar(scale)
            return back(op.Where(op.GreaterOrEqual(x, zero), s, op.Neg(s)), dtype)
        i8 = ir.DataType.INT8
        q = op.Where(op.GreaterOrEqual(x, zero), const(1, i8), const(-1, i8))
        zp = const(np.zeros(int(scale.shape[0]), np.int8), i8)
        return back(op.DequantizeLinear(q, scale, zp, axis=axis), dtype)

    return {
        torch.ops.spos_hw.fake_quant.default: fake_quant,
        torch.ops.spos_hw.sign_quant.default: sign_quant,
    }


LEVELS = ("disable", "basic", "extended", "all")
"""ONNX Runtime graph optimization levels every parity check runs at."""


class FakeQuantCases(torch.nn.Module):
    """One fake-quant application per input: what the exactness checks export and run.

    ``cases`` are ``(bits, signed, axis)``; ``scales[i]`` is case i's scale (a buffer, so it
    is an initializer of the exported graph, as a trained layer's step size is).
    """

    def __init__(self, cases: list[tuple[int, bool, int | None]], scales: list[torch.Tensor]) -> None:
        super().__init__()
        self.cases = list(cases)
        for i, s in enumerate(scales):
            self.register_buffer(f"scale{i}", s.detach().clone())

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from spos_hw.quant.fake_quant import fake_quant

        return tuple(
            fake_quant(x, getattr(self, f"scale{i}"), bits=b, signed=sg, axis=ax)
            for i, (x, (b, sg, ax)) in enumerate(zip(xs, self.cases))
        )


def export_model(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], opset: int) -> bytes:
    """``module`` exported with the dynamo exporter and this table, as ONNX bytes (checked)."""
    import onnx

    program = torch.onnx.export(
        module, inputs, dynamo=True, opset_version=opset, custom_translation_table=translation_table(opset), verbose=False
    )
    proto = program.model_proto
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def ort_outputs(model: bytes, inputs: tuple[torch.Tensor, ...], level: str, threads: int = 0) -> list[np.ndarray]:
    """Run an ONNX model on the CPU execution provider at one graph optimization level."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[level]
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: x.detach().cpu().numpy() for i, x in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feed)


def bit_mismatches(a: np.ndarray, b: np.ndarray) -> int:
    """Number of elements whose float32 bit patterns differ (-0.0 != 0.0; any NaN equals any NaN)."""
    a32, b32 = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
    return int(np.count_nonzero((a32.view(np.int32) != b32.view(np.int32)) & ~(np.isnan(a32) & np.isnan(b32))))


__all__ = [
    "LEVELS",
    "MIN_OPSET",
    "FakeQuantCases",
    "bit_mismatches",
    "container",
    "export_model",
    "ort_outputs",
    "translation_table",
]
