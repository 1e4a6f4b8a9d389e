"""TensorRT-readiness check of an ONNX model, without TensorRT: ``spos-hw export --check-trt model.onnx``.

The rules TensorRT imposes on explicit-quantization (Q/DQ) models (TensorRT 10/11 developer
guide, "Explicit Quantization"; onnx-tensorrt ``operators.md``):

- ``opset``: the default-domain opset is one the parser reads (9..25 on TensorRT 11; 10.x
  parsers stop earlier, see docs/export.md);
- ``op``: every node is a default-domain operator the parser supports;
- ``scale``: Q/DQ scales are initializers (or Constants), finite and positive;
- ``zero-point``: zero points are initializers and all zero (symmetric quantization);
- ``dtype``: quantized types are INT8 or FP8, or INT4/FP4 for weights only (no UINT8);
- ``activation``: activations are quantized per tensor (per-channel scales only on weights);
- ``pair``: a QuantizeLinear feeds DequantizeLinear nodes only (TensorRT fuses each Q/DQ pair
  into its neighbours; an operator on the integer tensor between them is not supported).

Every violation is reported with its node name; nothing stops at the first one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MIN_OPSET, MAX_OPSET = 9, 25

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


def check_trt(model: Any) -> list[Violation]:
    """Every TensorRT-readiness violation of an ``onnx.ModelProto`` (empty: ready)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    out: list[Violation] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        out.append(Violation("<model>", "opset", f"default-domain opset {opset} is outside TensorRT's {MIN_OPSET}..{MAX_OPSET}"))

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

    def is_weight(name: str) -> bool:
        """A constant, possibly through a DequantizeLinear / QuantizeLinear of a constant."""
        if name in consts:
            return True
        p = producer.get(name)
        return p is not None and p.op_type in ("QuantizeLinear", "DequantizeLinear", "Identity", "Clip") and is_weight(p.input[0])

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
            out.append(Violation(name, "scale", f"scale {scale_name!r} is not an initializer"))
        elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            bad = scale[~(np.isfinite(scale) & (scale > 0))].ravel()[:3].tolist()
            out.append(Violation(name, "scale", f"scale {scale_name!r} has non-positive or non-finite values {bad}"))
        zp_name = n.input[2] if len(n.input) > 2 and n.input[2] else ""
        qtype = _quantized_type(n, zp_name, const_types, consts, producer, onnx)
        if zp_name:
            zp = consts.get(zp_name)
            if zp is None:
                out.append(Violation(name, "zero-point", f"zero point {zp_name!r} is not an initializer"))
            elif np.any(zp.astype(np.float64) != 0):
                out.append(Violation(name, "zero-point", f"zero point {zp_name!r} is not 0 (asymmetric quantization)"))
        weight = is_weight(n.input[0])
        allowed = WEIGHT_TYPES if weight else ACTIVATION_TYPES
        if qtype is not None and qtype not in allowed:
            what = "weights" if weight else "activations"
            out.append(Violation(name, "dtype", f"{qtype} {what}; TensorRT takes {' or '.join(allowed)} for {what}"))
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
    return out


def _quantized_type(node, zp_name: str, const_types: dict, consts: dict, producer: dict, onnx) -> str | None:
    """The integer/float8 type a Q produces or a DQ consumes."""
    if zp_name and zp_name in const_types:
        return onnx.TensorProto.DataType.Name(const_types[zp_name])
    if node.op_type == "QuantizeLinear":
        attr = next((a.i for a in node.attribute if a.name == "output_dtype"), 0)
        return onnx.TensorProto.DataType.Name(attr) if attr else "UINT8"
    src = node.input[0]
    if src in const_types:
        return onnx.TensorProto.DataType.Name(const_types[src])
    p = producer.get(src)
    if p is not None and p.op_type == "QuantizeLinear":
        pzp = p.input[2] if len(p.input) > 2 else ""
        return _quantized_type(p, pzp, const_types, consts, producer, onnx)
    return None  # produced by another op (reported by the 'pair' rule of its Q)


def report(violations: list[Violation]) -> dict[str, Any]:
    return {"ready": not violations, "violations": [asdict(v) for v in violations]}


def check_trt_file(path: str) -> dict[str, Any]:
    """Check an ONNX file against the rules; ``ready`` tells whether it passed (a report either way)."""
    import onnx

    from spos_hw.errors import ArtifactError

    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"ONNX file {path!r} does not exist")
    try:
        model = onnx.load(p)
    except Exception as exc:  # protobuf DecodeError and friends: a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path!r} is not a readable ONNX model: {first}") from None
    violations = check_trt(model)
    return {"model": str(p), **report(violations)}


__all__ = ["MAX_OPSET", "MIN_OPSET", "SUPPORTED_OPS", "Violation", "check_trt", "check_trt_file", "has_qdq", "report"]
