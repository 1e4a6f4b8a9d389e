"""Graph rewrites of Q/DQ exports: pre-quantized weights are exact; BN folding keeps the function."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from spos_hw.deploy.fold import fold_batchnorm, prequantize_weights
from spos_hw.deploy.onnx import export_onnx
from spos_hw.deploy.verify import ort_session
from spos_hw.nas.supernet import SubNet
from spos_hw.quant.onnx import bit_mismatches


@pytest.fixture(scope="module")
def qmodel(tinyq):
    arch = tinyq.arch({"op": [0, 1, 0], "ch": [1, 0, 1], "w": [1, 0, 2], "a": [1, 0, 1]})
    torch.manual_seed(0)
    net = SubNet(tinyq, arch)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    with torch.no_grad():
        net.train()(torch.randn(32, *tinyq.input_shape))
    net.eval()
    x = torch.randn(8, *tinyq.input_shape, generator=torch.Generator().manual_seed(1))
    return net, export_onnx(net, (x,)), x


def run(model, x, level="all"):
    return ort_session(model.SerializeToString(), level=level).run(None, {"input": x.numpy()})[0]


def test_prequantized_weights_are_bit_exact(qmodel):
    _, model, x = qmodel
    pre = copy.deepcopy(model)
    n = prequantize_weights(pre)
    ops = [node.op_type for node in pre.graph.node]
    assert n >= 10 and ops.count("QuantizeLinear") < [nd.op_type for nd in model.graph.node].count("QuantizeLinear")
    for level in ("disable", "all"):
        assert bit_mismatches(run(model, x, level), run(pre, x, level)) == 0


def test_fold_batchnorm_removes_bn_and_keeps_the_function(qmodel):
    _, model, x = qmodel
    folded = copy.deepcopy(model)
    n = fold_batchnorm(folded)
    bns = [node.op_type for node in folded.graph.node].count("BatchNormalization")
    assert n > 0 and bns == [nd.op_type for nd in model.graph.node].count("BatchNormalization") - n
    ref, got = run(model, x, "disable"), run(folded, x, "disable")
    # float rounding moves a few activations across a rounding boundary; the logits stay close
    assert np.abs(ref - got).max() <= 0.05 * np.abs(ref).max()
