"""TensorRT-readiness rules on hand-built good and deliberately broken Q/DQ models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from spos_hw.export.trt_check import check_trt, has_qdq


def qdq_model(*, act_zp=0, act_type=TensorProto.INT8, w_scale=(0.1, 0.2), w_type="INT8", opset=21, extra=None, act_scale=(0.05,)):
    """x -> Q/DQ (activation) -> Conv(weight via Q/DQ per channel) -> Relu [-> extra nodes]."""
    inits = [
        numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(act_scale[0] if len(act_scale) == 1 else act_scale, np.float32), "a_scale"),
        helper.make_tensor("a_zp", act_type, [] if len(act_scale) == 1 else [len(act_scale)], [act_zp] * len(act_scale)),
    ]
    wq = {"output_dtype": getattr(TensorProto, w_type)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="act_q", **({"axis": 1} if len(act_scale) > 1 else {})),
        helper.make_node("DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xd"], name="act_dq", **({"axis": 1} if len(act_scale) > 1 else {})),
        helper.make_node("QuantizeLinear", ["w", "w_scale"], ["wq"], name="w_q", axis=0, **wq),
        helper.make_node("DequantizeLinear", ["wq", "w_scale"], ["wd"], name="w_dq", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    out = "y"
    for node in extra or []:
        nodes.append(node)
        out = node.output[0]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2, 4, 4])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def rules(model) -> set[tuple[str, str]]:
    return {(v.node, v.rule) for v in check_trt(model)}


def test_good_model_is_ready():
    good = qdq_model()
    onnx.checker.check_model(good)
    assert check_trt(good) == [] and has_qdq(good.SerializeToString())
    assert check_trt(qdq_model(w_type="INT4")) == []  # INT4 on weights is fine


def test_each_broken_rule_is_reported_with_its_node():
    assert rules(qdq_model(act_zp=3)) == {("act_q", "zero-point"), ("act_dq", "zero-point")}
    assert rules(qdq_model(w_scale=(0.1, -0.2))) == {("w_q", "scale"), ("w_dq", "scale")}
    assert rules(qdq_model(w_scale=(0.1, 0.0))) == {("w_q", "scale"), ("w_dq", "scale")}
    assert rules(qdq_model(act_type=TensorProto.UINT8)) == {("act_q", "dtype"), ("act_dq", "dtype")}
    assert rules(qdq_model(act_type=TensorProto.INT4)) == {("act_q", "dtype"), ("act_dq", "dtype")}  # INT4 activations
    assert rules(qdq_model(act_scale=(0.1,) * 1, opset=8)) == {("<model>", "opset")}
    per_ch = qdq_model(act_scale=(0.1, 0.1))
    assert ("act_q", "activation") in rules(per_ch)
    custom = helper.make_node("Swish", ["y"], ["z"], name="my_swish", domain="com.example")
    unsupported = helper.make_node("Det", ["y"], ["z2"], name="det")
    assert rules(qdq_model(extra=[unsupported])) == {("det", "op")}
    assert rules(qdq_model(extra=[custom])) == {("my_swish", "op")}


def test_an_op_between_q_and_dq_and_many_violations_at_once():
    model = qdq_model(act_zp=1, act_type=TensorProto.UINT8)
    g = model.graph
    g.initializer.extend([helper.make_tensor("lo", TensorProto.UINT8, [], [0]), helper.make_tensor("hi", TensorProto.UINT8, [], [15])])
    clip = helper.make_node("Clip", ["xq", "lo", "hi"], ["xqc"], name="int_clip")
    dq = next(n for n in g.node if n.name == "act_dq")
    dq.input[0] = "xqc"
    g.node.insert(1, clip)
    found = rules(model)
    assert ("act_q", "pair") in found and ("act_q", "zero-point") in found and ("act_q", "dtype") in found
    assert len(check_trt(model)) >= 5  # every violation, not the first
