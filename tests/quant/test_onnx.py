"""Q/DQ lowering: bit-exact with ONNX Runtime at every optimization level, the right integer
containers, and a whole quantized subnet that exports and runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from spos_hw.errors import QuantError
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet
from spos_hw.quant.fake_quant import quant_range
from spos_hw.quant.layers import QuantConv2d, QuantLinear
from spos_hw.quant.onnx import LEVELS, FakeQuantCases, bit_mismatches, container, export_model, ort_outputs, translation_table


def test_containers():
    assert container(-8, 7) == ("INT8", True)  # 4-bit: exact integers in INT8, clipped in float before the Q
    assert container(-2, 1) == ("INT8", True)
    assert container(0, 15) == ("INT8", True)  # unsigned below 8 bits fits INT8
    assert container(0, 127) == ("INT8", True)  # 7-bit unsigned
    assert container(-128, 127) == ("INT8", False)
    assert container(0, 255) == ("UINT8", False)  # 8-bit unsigned: the one range INT8 cannot hold
    with pytest.raises(QuantError, match="opset >= 13"):
        translation_table(11)


def _cases(n_per_case: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cases, scales, xs = [], [], []
    for bits in range(1, 9):
        for signed, axis in ((True, 0), (False, None), (True, None)):
            rows = 16
            if axis is None:
                s = torch.tensor(2.0**-5 if bits % 2 else 0.0371)  # power of two: exact ties
                x = torch.randn(rows, n_per_case // rows, generator=g) * float(s) * 2**bits / 3
            else:
                s = torch.rand(rows, generator=g) * 0.1 + 1e-3
                x = torch.randn(rows, n_per_case // rows, generator=g) * s[:, None] * 2**bits / 3
            x.view(-1)[:64] = (torch.arange(64) - 32 + 0.5) * float(s.reshape(-1)[0])  # ties (exact when s = 2^-k)
            x.view(-1)[64:70] = torch.tensor([float("inf"), float("-inf"), -0.0, 0.0, 1e30, -1e-30])
            if not (bits == 1 and signed):  # the range's ends: exactly on, one ulp either side, half a step out
                qmin, qmax = quant_range(bits, signed)
                s0 = float(s.reshape(-1)[0])
                ends = torch.tensor([qmin * s0, qmax * s0, (qmin - 0.5) * s0, (qmax + 0.5) * s0], dtype=torch.float32)
                ulp = torch.nextafter(ends, torch.full_like(ends, float("inf"))) - ends
                x.view(-1)[70:82] = torch.cat([ends, ends + ulp, ends - ulp])
            cases.append((bits, signed, axis))
            scales.append(s)
            xs.append(x)
    return cases, scales, xs


@pytest.mark.parametrize("opset", [21, 25])
def test_qdq_bit_exact_with_onnxruntime(opset):
    cases, scales, xs = _cases(16 * 512)
    module = FakeQuantCases(cases, scales).eval()
    model = export_model(module, tuple(xs), opset)
    with torch.no_grad():
        ref = [y.numpy() for y in module(*xs)]
    for level in LEVELS:
        got = ort_outputs(model, tuple(xs), level)
        assert [bit_mismatches(o, r) for o, r in zip(got, ref)] == [0] * len(cases), level
    # the TensorRT-conformant shape: INT8 everywhere (UINT8 only for 8-bit unsigned), explicit
    # zero points, a float clip before the Q, nothing between a Q and its DQ
    proto = onnx.load_from_string(model)
    producer = {o: n for n in proto.graph.node for o in n.output}
    consts = {t.name: t for t in proto.graph.initializer}
    consts.update({n.output[0]: n.attribute[0].t for n in proto.graph.node if n.op_type == "Constant"})
    qdq = [n for n in proto.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert all(len(n.input) == 3 and n.input[2] in consts for n in qdq)
    zp_types = {consts[n.input[2]].data_type for n in qdq}
    assert zp_types == {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    uint8 = [n for n in qdq if consts[n.input[2]].data_type == onnx.TensorProto.UINT8]
    assert len(uint8) == 2  # the one 8-bit unsigned case (its Q and DQ)
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear":
            assert {c.op_type for c in proto.graph.node if n.output[0] in c.input} == {"DequantizeLinear"}
        if n.op_type == "DequantizeLinear":
            assert producer[n.input[0]].op_type in ("QuantizeLinear", "Where")  # Where: the 1-bit per-channel case
    assert sum(n.op_type == "Clip" for n in proto.graph.node) == 7 + 6  # per tensor below 8 bits (1-bit signed: none)
    assert sum(n.op_type == "Where" for n in proto.graph.node) == 2  # 1-bit signed: per channel INT8, per tensor float
    assert sum(n.op_type == "DequantizeLinear" for n in proto.graph.node) == len(cases) - 1


def test_quantized_subnet_exports_to_qdq_and_runs():
    space = get_space("resnet18-mixed")
    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.arch("ch=0,1,2,0,1,2,0,1;w=0,1,2,3,0,1,2,3;a=3,2,1,0,3,2,1,0")  # every bit width
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(16, *space.input_shape), arch)
    sub = net.eval().materialize(arch).eval()
    x = torch.randn(2, *space.input_shape)
    with torch.no_grad():
        ref = sub(x).numpy()
    model = export_model(sub, (x,), 21)
    graph = onnx.load_from_string(model).graph
    producer = {out: n.op_type for n in graph.node for out in n.output}
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) == sum(1 for m in sub.modules() if isinstance(m, (QuantConv2d, QuantLinear)))
    for n in compute:  # every layer reads a dequantized input and a dequantized weight (1-bit ones too)
        inputs = list(n.input[:2])
        if n.op_type == "MatMul" and producer.get(inputs[1]) == "Transpose":
            inputs[1] = next(m.input[0] for m in graph.node if inputs[1] in m.output)
        assert [producer.get(i) for i in inputs] == ["DequantizeLinear"] * 2, n.name
    assert "Clip" in producer.values() and "Clip" not in {
        producer.get(n.input[0]) for n in graph.node if n.op_type == "DequantizeLinear"
    }
    for level in LEVELS:
        (out,) = ort_outputs(model, (x,), level)
        # Conv sums in another order than torch; a low-bit activation that lands next to a
        # rounding boundary could flip, so allow a little more than float noise (measured: 2e-7)
        assert np.abs(out - ref).max() <= 1e-3 * np.abs(ref).max(), level
