"""TensorRT-readiness check of an ONNX model, without TensorRT: ``spos-hw export --check-trt model.onnx``.

The rules TensorRT imposes on explicit-quantization (Q/DQ) models (sources in docs/export.md,
"TensorRT conformance": the TensorRT 10 operator docs for IQuantizeLayer/IDequantizeLayer, the
onnx-tensorrt ``operators.md`` and NVIDIA's ONNX opset guide):

- ``opset``: the default-domain opset is in the range the parser of ``trt_version`` reads
  (``OPSET_RANGES``);
- ``op``: every node is a default-domain operator the parser supports;
- ``scale``: Q/DQ scales are constants (initializers or Constant nodes), finite and positive;
- ``zero-point``: every Q/DQ has an explicit zero point (ONNX reads a missing one as UINT8,
  TensorRT as INT8), a constant, all zero (symmetric quantization);
- ``dtype``: quantized types are INT8 or FP8; INT4/FP4 only for constant weights feeding a
  Gemm or MatMul; never UINT8;
- ``activation``: activations are quantized per tensor (per-channel scales only on weights);
- ``pair``: a QuantizeLinear feeds DequantizeLinear nodes only (nothing between them);
- ``source``: a DequantizeLinear reads a QuantizeLinear or a constant. A ``Where`` is followed:
  ``Where`` of constants is a constant (a folded sign quantizer), one on a computed tensor is not.

Every violation is reported with its node name; nothing stops at the first one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

OPSET_RANGES = {"10.0": (9, 20), "10.1": (9, 20), "11": (9, 25)}
"""ONNX opsets each TensorRT parser reads (docs/export.md cites where each range comes from)."""
DEFAULT_TRT_VERSION = "11"
"""The newest TensorRT version documented in ``OPSET_RANGES``."""
MIN_OPSET, MAX_OPSET = OPSET_RANGES[DEFAULT_TRT_VERSION]

SUPPORTED_OPS = frozenset(
    [
        "Abs",
        "Acos",
        "Acosh",
        "Add",
        "AffineGrid",
        "And",
        "ArgMax",
        "ArgMin",
        "Asin",
        "Asinh",
        "Atan",
        "Atanh",
        "AveragePool",
        "BatchNormalization",
        "Bernoulli",
        "BitShift",
        "BitwiseAnd",
        "BitwiseNot",
        "BitwiseOr",
        "BitwiseXor",
        "BlackmanWindow",
        "Cast",
        "CastLike",
        "Ceil",
        "Celu",
        "Clip",
        "Concat",
        "ConcatFromSequence",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "ConvTranspose",
        "Cos",
        "Cosh",
        "CumSum",
        "DFT",
        "DeformConv",
        "DepthToSpace",
        "DequantizeLinear",
        "Div",
        "Dropout",
        "DynamicQuantizeLinear",
        "Einsum",
        "Elu",
        "Equal",
        "Erf",
        "Exp",
        "Expand",
        "EyeLike",
        "Flatten",
        "Floor",
        "Gather",
        "GatherElements",
        "GatherND",
        "Gelu",
        "Gemm",
        "GlobalAveragePool",
        "GlobalLpPool",
        "GlobalMaxPool",
        "Greater",
        "GreaterOrEqual",
        "GridSample",
        "GroupNormalization",
        "GRU",
        "HammingWindow",
        "HannWindow",
        "HardSigmoid",
        "HardSwish",
        "Hardmax",
        "Identity",
        "If",
        "ImageScaler",
        "InstanceNormalization",
        "IsInf",
        "IsNaN",
        "LayerNormalization",
        "LeakyRelu",
        "Less",
        "LessOrEqual",
        "Log",
        "LogSoftmax",
        "Loop",
        "LpNormalization",
        "LpPool",
        "LRN",
        "LSTM",
        "MatMul",
        "MatMulInteger",
        "Max",
        "MaxPool",
        "MaxRoiPool",
        "MaxUnpool",
        "Mean",
        "MeanVarianceNormalization",
        "Min",
        "Mish",
        "Mod",
        "Mul",
        "Multinomial",
        "Neg",
        "NonMaxSuppression",
        "NonZero",
        "Not",
        "OneHot",
        "Or",
        "Pad",
        "ParametricSoftplus",
        "Pow",
        "PRelu",
        "QuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Range",
        "Reciprocal",
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMax",
        "ReduceMean",
        "ReduceMin",
        "ReduceProd",
        "ReduceSum",
        "ReduceSumSquare",
        "Relu",
        "Reshape",
        "Resize",
        "ReverseSequence",
        "RNN",
        "RoiAlign",
        "Round",
        "ScaledTanh",
        "Scan",
        "Scatter",
        "ScatterElements",
        "ScatterND",
        "Selu",
        "SequenceAt",
        "SequenceConstruct",
        "SequenceEmpty",
        "SequenceErase",
        "SequenceInsert",
        "SequenceLength",
        "Shape",
        "Shrink",
        "Sigmoid",
        "Sign",
        "Sin",
        "Sinh",
        "Size",
        "Slice",
        "Softmax",
        "Softplus",
        "Softsign",
        "SpaceToDepth",
        "Split",
        "SplitToSequence",
        "Sqrt",
        "Squeeze",
        "STFT",
        "Sub",
        "Sum",
        "Tan",
        "Tanh",
        "ThresholdedRelu",
        "Tile",
        "TopK",
        "Transpose",
        "Trilu",
        "Unique",
        "Unsqueeze",
        "Upsample",
        "Where",
        "Xor",
    ]
)
"""Operators the TensorRT 10/11 ONNX parser imports (onnx-tensorrt ``docs/operators.md``)."""

ACTIVATION_TYPES = ("INT8", "FLOAT8E4M3FN")
WEIGHT_TYPES = ("INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1")


@dataclass(frozen=True)
class Violation:
    node: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.node}: [{self.rule}] {self.message}"


def has_qdq(model: bytes | Any) -> bool:
    """Whether an ONNX model (bytes or ``ModelProto``) holds QuantizeLinear/DequantizeLinear nodes."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, (bytes, bytearray)) else model
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def trt_opset_range(trt_version: str) -> tuple[int, int]:
    """``(min, max)`` opset the parser of ``trt_version`` reads ("10.0", "10.1", "11" or "11.x")."""
    from spos_hw.errors import ConfigError

    v = str(trt_version).strip().lower()
    v = v[:-2] if v.endswith(".x") else v
    if v not in OPSET_RANGES and v.split(".")[0] == "11":
        v = "11"
    if v not in OPSET_RANGES:
        raise ConfigError(
            f"TensorRT version {trt_version!r} has no documented opset range; known: {', '.join(OPSET_RANGES)} (11.x)"
        )
    return OPSET_RANGES[v]


_LOW_PRECISION = ("INT4", "FLOAT4E2M1")
_CONSTANT_PRESERVING = frozenset(
    ["Where", "GreaterOrEqual", "Greater", "Less", "LessOrEqual", "Equal", "Sign", "Neg", "Mul", "Min", "Max", "Clip"]
    + ["Identity", "Cast", "Reshape", "Transpose"]
)
"""Ops whose output is a constant when all their inputs are (how a DQ's input is traced to a weight)."""
_MATMUL = ("Gemm", "MatMul")


def check_trt(model: Any, trt_version: str = DEFAULT_TRT_VERSION) -> list[Violation]:
    """Every TensorRT-readiness violation of an ``onnx.ModelProto`` for ``trt_version`` (empty: ready)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    out: list[Violation] = []
    lo, hi = trt_opset_range(trt_version)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not lo <= opset <= hi:
        out.append(Violation("<model>", "opset", f"default-domain opset {opset} is outside TensorRT {trt_version}'s {lo}..{hi}"))

    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    const_types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            const_types[n.output[0]] = n.attribute[0].t.data_type
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def constant(name: str, depth: int = 0) -> bool:
        """A constant, or computed from constants only through shape-preserving ops (Where followed)."""
        if name in consts:
            return True
        p = producer.get(name)
        if p is None or depth > 32 or p.op_type not in _CONSTANT_PRESERVING:
            return False
        return all(constant(i, depth + 1) for i in p.input if i)

    def is_weight(node) -> bool:
        """A Q of a constant, or a DQ rooted at a constant (directly, through Where, or through a Q of one)."""
        src = node.input[0]
        if constant(src):
            return True
        p = producer.get(src)
        return node.op_type == "DequantizeLinear" and p is not None and p.op_type == "QuantizeLinear" and constant(p.input[0])

    def feeds_matmul(node) -> bool:
        """The DQ's output reaches only Gemm/MatMul (through Transpose/Reshape), and as their weight."""
        users = consumers.get(node.output[0], [])
        if node.op_type == "QuantizeLinear":
            return bool(users) and all(u.op_type == "DequantizeLinear" and feeds_matmul(u) for u in users)
        ok = bool(users)
        for u in users:
            if u.op_type in ("Transpose", "Reshape"):
                ok = ok and feeds_matmul(u)
            else:
                ok = ok and u.op_type in _MATMUL and list(u.input).index(node.output[0]) == 1
        return ok

    for n in graph.node:
        name = n.name or f"<{n.op_type} -> {n.output[0] if n.output else '?'}>"
        if n.domain not in ("", "ai.onnx"):
            out.append(Violation(name, "op", f"custom-domain operator {n.domain}::{n.op_type} is not supported"))
            continue
        if n.op_type not in SUPPORTED_OPS:
            out.append(Violation(name, "op", f"operator {n.op_type} is not supported by the TensorRT ONNX parser"))
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale_name = n.input[1] if len(n.input) > 1 else ""
        scale = consts.get(scale_name)
        if scale is None:
            out.append(Violation(name, "scale", f"scale {scale_name!r} is not a constant (initializer or Constant)"))
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            bad = scale[~(np.isfinite(scale) & (scale > 0))].ravel()[:3].tolist()
            out.append(Violation(name, "scale", f"scale {scale_name!r} has non-positive or non-finite values {bad}"))
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else ""
        qtype = _quantized_type(n, zp_name, const_types, producer, onnx)
        if not zp_name:
            out.append(
                Violation(
                    name,
                    "zero-point",
                    "no zero point: ONNX reads it as UINT8, TensorRT as INT8; give an explicit INT8 zero point",
                )
            )
        elif zp_name not in consts:
            out.append(Violation(name, "zero-point", f"zero point {zp_name!r} is not a constant"))
        elif np.any(consts[zp_name].astype(np.float64) != 0):
            out.append(Violation(name, "zero-point", f"zero point {zp_name!r} is not 0 (asymmetric quantization)"))
        weight = is_weight(n)
        if qtype == "UINT8":
            out.append(Violation(name, "dtype", "UINT8 is not a TensorRT quantized type (INT8, FP8; INT4/FP4 for weights)"))
        elif qtype in _LOW_PRECISION and not (weight and feeds_matmul(n)):
            where = "an activation" if not weight else "a weight outside Gemm/MatMul"
            out.append(Violation(name, "dtype", f"{qtype} on {where}; TensorRT takes {qtype} only for Gemm/MatMul weights"))
        elif qtype is not None and qtype not in ACTIVATION_TYPES + _LOW_PRECISION:
            out.append(Violation(name, "dtype", f"{qtype} is not a TensorRT quantized type (INT8, FP8; INT4/FP4 for weights)"))
        if not weight and scale is not None and scale.size > 1:
            out.append(
                Violation(
                    name, "activation", f"activation quantized per channel ({scale.size} scales); TensorRT needs per-tensor"
                )
            )
        if n.op_type == "QuantizeLinear":
            for c in consumers.get(n.output[0], []):
                if c.op_type != "DequantizeLinear":
                    out.append(Violation(name, "pair", f"its output feeds {c.op_type} {c.name!r}, not a DequantizeLinear"))
        else:
            p = producer.get(n.input[0])
            if not constant(n.input[0]) and (p is None or p.op_type != "QuantizeLinear"):
                what = "a graph input" if p is None else f"{p.op_type} {p.name!r}"
                out.append(
                    Violation(name, "source", f"reads {what}; a DequantizeLinear must read a QuantizeLinear or a constant")
                )
    return out


def _quantized_type(node, zp_name: str, const_types: dict, producer: dict, onnx, depth: int = 0) -> str | None:
    """The integer/float8 type a Q produces or a DQ consumes (following Where's constant branches)."""
    if zp_name:  # a computed zero point: its type is unknown here (the zero-point rule reports it)
        return onnx.TensorProto.DataType.Name(const_types[zp_name]) if zp_name in const_types else None
    if node.op_type == "QuantizeLinear":
        attr = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        return onnx.TensorProto.DataType.Name(attr) if attr else "UINT8"
    src = node.input[0]
    while depth < 32:
        depth += 1
        if src in const_types:
            return onnx.TensorProto.DataType.Name(const_types[src])
        p = producer.get(src)
        if p is None:
            return None
        if p.op_type == "QuantizeLinear":
            pzp = p.input[2] if len(p.input) > 2 else ""
            return _quantized_type(p, pzp, const_types, producer, onnx, depth)
        if p.op_type == "Where":
            src = p.input[1]
        elif p.op_type in ("Identity", "Reshape", "Transpose", "Neg"):
            src = p.input[0]
        else:
            return None
    return None


def report(violations: list[Violation]) -> dict[str, Any]:
    return {"ready": not violations, "violations": [asdict(v) for v in violations]}


def check_trt_file(path: str, trt_version: str = DEFAULT_TRT_VERSION) -> dict[str, Any]:
    """Check an ONNX file against the rules for ``trt_version``; ``ready`` tells whether it passed (a report either way)."""
    import onnx

    from spos_hw.errors import ArtifactError

    trt_opset_range(trt_version)  # an unknown version is a usage error before any file is read
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"ONNX file {path!r} does not exist")
    try:
        model = onnx.load(p)
    except Exception as exc:  # protobuf DecodeError and friends: a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path!r} is not a readable ONNX model: {first}") from None
    violations = check_trt(model, trt_version)
    return {"model": str(p), "trt_version": trt_version, **report(violations)}


__all__ = [
    "DEFAULT_TRT_VERSION",
    "MAX_OPSET",
    "MIN_OPSET",
    "OPSET_RANGES",
    "SUPPORTED_OPS",
    "Violation",
    "check_trt",
    "check_trt_file",
    "has_qdq",
    "report",
    "trt_opset_range",
]
