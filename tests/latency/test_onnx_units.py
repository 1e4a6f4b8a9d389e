"""The shared export helper and the block ONNX models: batched export, extraction, composition."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from spos_hw.deploy.onnx import export_onnx
from spos_hw.latency.modules import BlockAt, PartAt
from spos_hw.latency.onnx_units import compose, export_units
from spos_hw.latency.units import Unit
from spos_hw.nas.supernet import SubNet
from spos_hw.protocol import ort_session


def test_export_onnx_writes_a_checked_model(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU()).eval()
    path = tmp_path / "m.onnx"
    model = export_onnx(net, (torch.randn(1, 1, 8, 8),), path)
    assert path.read_bytes() == model.SerializeToString()
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["output"]
    assert model.opset_import[0].version == 21
    onnx.checker.check_model(onnx.load(path), full_check=True)


def _attrs(model):
    return [(n.op_type, sorted((a.name, str(onnx.helper.get_attribute_value(a))) for a in n.attribute)) for n in model.graph.node]


def test_composed_subnet_computes_what_the_subnet_computes(tiny):
    """Block models exported together, extracted and chained == the SubNet (numerically and op by op)."""
    arch = tiny.random_arch(np.random.default_rng(4))
    net = SubNet(tiny, arch).eval()
    for m in net.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    bits = tiny.fixed_bits
    parts = [PartAt(net.stem, bits)] + [BlockAt(b, bb) for b, bb in zip(net.blocks, net.block_bits)] + [PartAt(net.head, bits)]
    shapes, x = [], torch.randn(1, *tiny.input_shape)
    with torch.no_grad():
        h = x
        for p in parts:
            shapes.append(tuple(h.shape))
            h = p(h)
        expected = net(x).numpy()
    units = [Unit(f"u{i}", "block", s, (lambda p=p: p)) for i, (p, s) in enumerate(zip(parts, shapes))]
    models = export_units(units)  # one export call (the bundle test covers several)
    composed = compose([models[u.key] for u in units])
    got = ort_session(composed.SerializeToString(), threads=1).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    real = export_onnx(net, (x,))
    assert _attrs(composed) == _attrs(real)


def test_compose_refuses_multi_output_graphs():
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["a"], ["b"]), onnx.helper.make_node("Identity", ["a"], ["c"])], "g",
        [onnx.helper.make_tensor_value_info("a", 1, [1])],
        [onnx.helper.make_tensor_value_info("b", 1, [1]), onnx.helper.make_tensor_value_info("c", 1, [1])],
    )
    with pytest.raises(ValueError, match="single-input"):
        compose([onnx.helper.make_model(g)])


def test_quantized_blocks_export_as_qdq_and_keep_bits_in_their_key(tiny):
    """No special case: a quantized space's blocks go through the same export and come out as Q/DQ."""
    import dataclasses

    from spos_hw.latency.units import block_units

    space = dataclasses.replace(tiny, name="tiny-q", channel_scales=(1.0,), wbits=(4, 8), abits=(8,))
    assert space.quantized
    units = block_units(space, 1)
    assert len(units) == 2 * 2 * 2 and {u.key[-4:] for u in units} == {"w4a8", "w8a8"}
    models = export_units(units[:2])
    for model in models.values():
        ops = {n.op_type for n in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
        ort_session(model.SerializeToString(), threads=1)  # ORT accepts it
