"""TensorRT-readiness rules, each on a good and a deliberately broken hand-built Q/DQ model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spos_hw.deploy.trt_check import DEFAULT_TRT_VERSION, check_trt, has_qdq, trt_opset_range
from spos_hw.errors import ConfigError
from tests.support.onnx_models import qdq_model


def rules(model, version: str = DEFAULT_TRT_VERSION) -> set[tuple[str, str]]:
    return {(v.node, v.rule) for v in check_trt(model, version)}


def node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def test_good_model_is_ready():
    good = qdq_model()
    onnx.checker.check_model(good)
    assert check_trt(good) == [] and has_qdq(good.SerializeToString())


def test_opset_against_the_trt_version():
    assert trt_opset_range("10.0") == (9, 20) and trt_opset_range("11.x") == (9, 25) and trt_opset_range("11.2") == (9, 25)
    assert rules(qdq_model(opset=20), "10.0") == set()
    assert rules(qdq_model(opset=21), "10.0") == {("<model>", "opset")}
    assert rules(qdq_model(opset=21), "11") == set()
    assert rules(qdq_model(opset=8)) == {("<model>", "opset")}
    with pytest.raises(ConfigError, match=r"known: 10\.0, 10\.1, 11"):
        trt_opset_range("9.2")


def test_uint8_is_refused():
    assert rules(qdq_model(act_type=TensorProto.UINT8)) == {("act_q", "dtype"), ("act_dq", "dtype")}
    assert rules(qdq_model(w_type="UINT8")) == {("w_q", "dtype"), ("w_dq", "dtype")}


def test_zero_points_explicit_constant_and_zero():
    assert rules(qdq_model(act_zp=3)) == {("act_q", "zero-point"), ("act_dq", "zero-point")}
    missing = rules(qdq_model(w_type=None))  # ONNX reads a missing zero point as UINT8
    assert {("w_q", "zero-point"), ("w_dq", "zero-point"), ("w_q", "dtype")} <= missing
    computed = qdq_model()
    computed.graph.node.insert(0, helper.make_node("Identity", ["a_zp"], ["a_zp_run"], name="zp_copy"))
    for n in ("act_q", "act_dq"):
        node(computed, n).input[2] = "a_zp_run"
    assert rules(computed) == {("act_q", "zero-point"), ("act_dq", "zero-point")}


def test_scales():
    assert rules(qdq_model(w_scale=(0.1, -0.2))) == {("w_q", "scale"), ("w_dq", "scale")}
    assert rules(qdq_model(w_scale=(0.1, 0.0))) == {("w_q", "scale"), ("w_dq", "scale")}


def test_per_channel_only_on_weights():
    assert ("act_q", "activation") in rules(qdq_model(act_scale=(0.1, 0.1)))


def gemm_model(w_type: str = "INT4", b_transposed_by_node: bool = False):
    """x -> Q/DQ INT8 -> Gemm(x, DQ(pre-quantized W, per channel)) : the one place INT4 is allowed."""
    dtype = getattr(TensorProto, w_type)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
        helper.make_tensor("a_zp", TensorProto.INT8, [], [0]),
        helper.make_tensor("wq", dtype, [3, 4], [1, -2, 3, -4] * 3),
        numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "w_scale"),
        helper.make_tensor("w_zp", dtype, [3], [0, 0, 0]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="act_q"),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xd"], name="act_dq"),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zp"], ["wd"], name="w_dq", axis=0),
        helper.make_node("Gemm", ["xd", "wd"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_int4_only_for_gemm_and_matmul_weights():
    good = gemm_model()
    onnx.checker.check_model(good)
    assert check_trt(good) == []
    assert rules(qdq_model(w_type="INT4")) == {("w_q", "dtype"), ("w_dq", "dtype")}  # on a Conv
    assert rules(qdq_model(act_type=TensorProto.INT4)) == {("act_q", "dtype"), ("act_dq", "dtype")}  # on activations
    swapped = gemm_model()
    node(swapped, "fc").input[:] = ["wd", "xd"]  # the INT4 tensor as Gemm's A input: not the weight
    assert ("w_dq", "dtype") in rules(swapped)


def test_nothing_between_q_and_dq():
    model = qdq_model()
    g = model.graph
    g.initializer.extend(
        [helper.make_tensor("lo", TensorProto.INT8, [], [0]), helper.make_tensor("hi", TensorProto.INT8, [], [15])]
    )
    g.node.insert(1, helper.make_node("Clip", ["xq", "lo", "hi"], ["xqc"], name="int_clip"))
    node(model, "act_dq").input[0] = "xqc"
    assert rules(model) == {("act_q", "pair"), ("act_dq", "source")}


def test_dq_reads_a_q_or_a_constant_and_where_is_followed():
    relu_fed = qdq_model()
    relu_fed.graph.node.insert(0, helper.make_node("Relu", ["x"], ["xr"], name="pre"))
    node(relu_fed, "act_dq").input[0] = "xr"  # DQ of a float tensor (and the Q now feeds nothing)
    assert ("act_dq", "source") in rules(relu_fed)

    def sign_weight(on_input: bool):
        m = qdq_model()
        g = m.graph
        g.initializer.extend(
            [
                numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                helper.make_tensor("one", TensorProto.INT8, [], [1]),
                helper.make_tensor("minus_one", TensorProto.INT8, [], [-1]),
            ]
        )
        src = "x" if on_input else "w"
        extra = [
            helper.make_node("GreaterOrEqual", [src, "zero"], ["ge"], name="ge"),
            helper.make_node("Where", ["ge", "one", "minus_one"], ["pm1"], name="sign"),
        ]
        for n in reversed(extra):
            g.node.insert(0, n)
        dq = "act_dq" if on_input else "w_dq"
        node(m, dq).input[0] = "pm1"
        node(m, dq).input[2] = "a_zp" if on_input else "w_zp"
        g.node.remove(node(m, "act_q" if on_input else "w_q"))
        return m

    assert check_trt(sign_weight(on_input=False)) == []  # Where of constants: a (folded) constant weight
    assert rules(sign_weight(on_input=True)) == {("act_dq", "source")}  # Where on an activation


def test_many_violations_at_once_and_other_rules():
    model = qdq_model(act_zp=1, act_type=TensorProto.UINT8, w_scale=(0.1, -1.0))
    assert len(check_trt(model)) >= 6  # every violation, not the first
    custom = helper.make_node("Swish", ["y"], ["z"], name="my_swish", domain="com.example")
    unsupported = helper.make_node("Det", ["y"], ["z2"], name="det")
    assert rules(qdq_model(extra=[unsupported])) == {("det", "op")}
    assert rules(qdq_model(extra=[custom])) == {("my_swish", "op")}
