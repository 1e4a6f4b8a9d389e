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
        [onnx.helper.make_node("Identity", ["a"], ["b"]), onnx.helper.make_node("Identity", ["a"], ["c"])],
        "g",
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


def test_skip_blocks_export_extract_and_compose(tmp_path):
    """An identity block is measured as what it is (an ONNX Identity) and chains like any block."""
    from spos_hw.latency.onnx_units import compose_net
    from spos_hw.latency.profile import unit_models
    from spos_hw.latency.units import block_units, net_unit
    from spos_hw.nas.space import Stage
    from spos_hw.nas.spaces.mbconv import MBConvSpace

    space = MBConvSpace(
        name="tinymb",
        input_shape=(1, 16, 16),
        num_classes=4,
        ops=("k3_e1_g2", "k5_e3", "skip"),
        stem_channels=8,
        stages=(Stage(2, 8, 1), Stage(2, 16)),
        head_channels=16,
    )
    units = block_units(space, 1)
    skips = [u for u in units if "/skip/" in u.key]
    assert len(skips) == 2 and len(units) == 3 + 2 + 3  # blocks 0 and 1 are identical; block 2 (8->16) has no skip
    arch = space.arch([2, 1, 0, 2])
    net = SubNet(space, arch).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    models = unit_models(space, [net_unit(space, arch, 1)])
    for u in skips:
        assert [n.op_type for n in models[u.key].graph.node] == ["Identity"]
        x = np.random.default_rng(0).standard_normal(u.input_shape).astype(np.float32)
        np.testing.assert_array_equal(ort_session(models[u.key].SerializeToString(), threads=1).run(None, {"input": x})[0], x)
    # the composed net (with two skips) is the real SubNet's graph, op for op up to the Identity nodes
    x = torch.randn(1, *space.input_shape)
    composed = compose_net(space, arch, models)
    with torch.no_grad():
        # the table's blocks carry their own random weights, so compare structure and shapes, and run it
        out = ort_session(composed.SerializeToString(), threads=1).run(None, {"input": x.numpy()})[0]
    assert out.shape == (1, 4)
    real = export_onnx(net, (x,))
    strip = lambda m: [a for a in _attrs(m) if a[0] != "Identity"]  # noqa: E731
    assert strip(composed) == strip(real)
