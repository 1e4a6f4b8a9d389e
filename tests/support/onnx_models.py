"""Small hand-built ONNX models for the export checks."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def qdq_model(*, act_zp=0, act_type=TensorProto.INT8, w_scale=(0.1, 0.2), w_type="INT8", opset=21, extra=None, act_scale=(0.05,)):
    """x -> Q/DQ (activation) -> Conv(weight via Q/DQ per channel) -> Relu [-> extra nodes]."""
    inits = [
        numpy_helper.from_array(np.ones((2, 1, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array(w_scale, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(act_scale[0] if len(act_scale) == 1 else act_scale, np.float32), "a_scale"),
        helper.make_tensor("a_zp", act_type, [] if len(act_scale) == 1 else [len(act_scale)], [act_zp] * len(act_scale)),
    ]
    w_zp = [] if w_type is None else ["w_zp"]  # None: no zero point (ONNX reads UINT8)
    if w_type is not None:
        inits.append(helper.make_tensor("w_zp", getattr(TensorProto, w_type), [len(w_scale)], [0] * len(w_scale)))
    nodes = [
        helper.make_node(
            "QuantizeLinear", ["x", "a_scale", "a_zp"], ["xq"], name="act_q", **({"axis": 1} if len(act_scale) > 1 else {})
        ),
        helper.make_node(
            "DequantizeLinear", ["xq", "a_scale", "a_zp"], ["xd"], name="act_dq", **({"axis": 1} if len(act_scale) > 1 else {})
        ),
        helper.make_node("QuantizeLinear", ["w", "w_scale", *w_zp], ["wq"], name="w_q", axis=0),
        helper.make_node("DequantizeLinear", ["wq", "w_scale", *w_zp], ["wd"], name="w_dq", axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    out = "y"
    for node in extra or []:
        nodes.append(node)
        out = node.output[0]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2, 4, 4])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
