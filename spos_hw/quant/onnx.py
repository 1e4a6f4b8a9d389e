"""ONNX lowering of the fake-quant ops: QuantizeLinear + DequantizeLinear (Q/DQ).

The dynamo exporter ignores ``autograd.Function.symbolic``; custom ops are lowered through
``torch.onnx.export(..., dynamo=True, custom_translation_table=translation_table(opset))``.
``spos_hw.deploy.onnx`` merges this table into its own.

Integer containers (the zero point's dtype decides Q's output type):

- per-axis (weights), zero point 0: the narrowest container whose range is exactly the
  op's range: INT2/UINT2 (opset >= 25), INT4/UINT4 (opset >= 21); otherwise INT8/UINT8;
- per-tensor (activations): INT8/UINT8 always (every ORT optimization level and TensorRT
  run them; TensorRT takes nothing narrower for activations);
- a range narrower than its container (3-bit, or activations below 8 bits) is enforced with
  an integer ``Clip`` between Q and DQ, so the values that reach DQ are exactly the op's.

The 1-bit sign quantizer is not a rounding of ``x / scale`` (``sign(0) = +1``), so it has
no QuantizeLinear: it lowers to ``DequantizeLinear(Where(x >= 0, 1, -1) as INT8, scale)``,
exactly ``+-scale``. On constant weights ORT folds the ``Where`` into an INT8 initializer of
+-1 and keeps the DequantizeLinear, like any other quantized weight. (A float
``Where(x >= 0, s, -s)`` would also be exact, but ORT then folds the weights into plain
constants and fuses the following BN into the conv, which moves low-bit activations across
rounding boundaries: measured 3% output error after one 4-bit layer.)
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

_CONTAINERS = (  # (ONNX dtype, qmin, qmax, first opset): sub-byte containers, used for exact ranges only
    ("INT2", -2, 1, 25),
    ("UINT2", 0, 3, 25),
    ("INT4", -8, 7, 21),
    ("UINT4", 0, 15, 21),
)


def container(qmin: int, qmax: int, zero_point: int, per_axis: bool, opset: int) -> tuple[str, bool]:
    """``(onnx dtype name, needs_clip)`` for the integer range ``[qmin, qmax]``."""
    if per_axis and zero_point == 0:
        for name, lo, hi, since in _CONTAINERS:
            if opset >= since and (lo, hi) == (qmin, qmax):
                return name, False
    if qmin < 0:
        return "INT8", (qmin, qmax) != (-128, 127)
    return "UINT8", (qmin, qmax) != (0, 255)


def translation_table(opset: int) -> dict[Callable, Callable]:
    """``custom_translation_table`` entries lowering ``spos_hw::fake_quant`` and ``spos_hw::sign_quant``.

    ``opset`` must be the ``opset_version`` of the export (it picks the containers).
    """
    if opset < MIN_OPSET:
        raise QuantError(f"quantized models export at opset >= {MIN_OPSET} (per-axis Q/DQ), got {opset}")
    import onnxscript
    from onnxscript import ir

    op = onnxscript.values.Opset("", opset)

    def const(value: Any, dtype: ir.DataType) -> Any:
        return op.Constant(value=ir.tensor(np.asarray(value, dtype=dtype.numpy()), dtype=dtype))

    def to_float(x):
        return (x, None) if x.dtype == ir.DataType.FLOAT else (op.Cast(x, to=ir.DataType.FLOAT), x.dtype)

    def back(y, dtype):
        return y if dtype is None else op.Cast(y, to=dtype)

    def fake_quant(x, scale, qmin: int, qmax: int, zero_point: int, axis: int | None = None, check: bool = True):
        x, dtype = to_float(x)
        per_axis = axis is not None
        name, clip = container(qmin, qmax, zero_point, per_axis, opset)
        kind = getattr(ir.DataType, name)
        ax = {"axis": axis} if per_axis else {}
        if not per_axis and len(scale.shape or ()) > 0:
            scale = op.Reshape(scale, const(np.zeros((0,), np.int64), ir.DataType.INT64))
        if name in ("INT8", "UINT8"):
            n = int(scale.shape[0]) if per_axis else None
            zp = const(np.full(n, zero_point) if per_axis else zero_point, kind)
            q = op.QuantizeLinear(x, scale, zp, **ax)
            if clip:
                q = op.Clip(q, const(qmin, kind), const(qmax, kind))
            y = op.DequantizeLinear(q, scale, zp, **ax)
        else:
            q = op.QuantizeLinear(x, scale, output_dtype=kind, **ax)
            y = op.DequantizeLinear(q, scale, **ax)
        return back(y, dtype)

    def sign_quant(x, scale, axis: int | None = None, check: bool = True):
        x, dtype = to_float(x)
        ax = {"axis": axis} if axis is not None else {}
        if axis is None and len(scale.shape or ()) > 0:
            scale = op.Reshape(scale, const(np.zeros((0,), np.int64), ir.DataType.INT64))
        i8 = ir.DataType.INT8
        q = op.Where(op.GreaterOrEqual(x, const(np.float32(0), ir.DataType.FLOAT)), const(1, i8), const(-1, i8))
        zp = const(np.zeros(int(scale.shape[0]), np.int8) if axis is not None else 0, i8)
        return back(op.DequantizeLinear(q, scale, zp, **ax), dtype)

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
