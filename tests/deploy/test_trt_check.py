"""TensorRT-readiness rules on hand-built good and deliberately broken Q/DQ models."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from spos_hw.deploy.trt_check import check_trt, has_qdq
from tests.support.onnx_models import qdq_model


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
    g.initializer.extend(
        [helper.make_tensor("lo", TensorProto.UINT8, [], [0]), helper.make_tensor("hi", TensorProto.UINT8, [], [15])]
    )
    clip = helper.make_node("Clip", ["xq", "lo", "hi"], ["xqc"], name="int_clip")
    dq = next(n for n in g.node if n.name == "act_dq")
    dq.input[0] = "xqc"
    g.node.insert(1, clip)
    found = rules(model)
    assert ("act_q", "pair") in found and ("act_q", "zero-point") in found and ("act_q", "dtype") in found
    assert len(check_trt(model)) >= 5  # every violation, not the first
