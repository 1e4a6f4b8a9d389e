"""Quantizing layers injected into the blocks: shared weights across bit widths, per-bit BN and step
sizes, supernet -> subnet materialization, and what stays untouched."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from spos_hw.errors import QuantError
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet
from spos_hw.nn.layers import SliceBatchNorm2d, SliceConv2d
from spos_hw.quant.layers import BitsBatchNorm2d, LsqQuantizer, QuantConv2d, QuantLinear, quant_layers, quantizers


def _warm(net, space, rng, steps=3, batch=16):
    """Train-mode forwards on several random paths: BN statistics and step sizes get real values."""
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.randn(batch, *space.input_shape), space.random_arch(rng))
    net.eval()


def test_one_weight_serves_every_bit_width():
    conv = QuantConv2d(8, 16, 3, wbits=[2, 4, 32], abits=[4, 32])
    assert isinstance(conv, SliceConv2d) and [n for n, _ in conv.named_parameters()] == [
        "weight",
        "wq.b2.scale",
        "wq.b4.scale",
        "aq.b4.scale",
    ]
    x = torch.rand(2, 8, 5, 5)
    full = conv(x, bits=(32, 32))
    torch.testing.assert_close(full, torch.nn.functional.conv2d(x, conv.weight, padding=1))
    y2, y4 = conv(x, bits=(2, 4)), conv(x, bits=(4, 4))
    assert not torch.equal(y2, y4) and (y4 - full).abs().mean() < (y2 - full).abs().mean()
    # the channel slice of the supernet still works, quantizing with the first step sizes
    assert conv(x[:, :5], 7, bits=(4, 4)).shape == (2, 7, 5, 5)
    with pytest.raises(QuantError, match="no 3-bit weight quantizer; its weight bit choices are 2, 4"):
        conv(x, bits=(3, 4))
    with pytest.raises(QuantError, match="needs bits="):
        conv(x)


def test_signed_and_unsigned_inputs():
    x = torch.randn(4, 3, 6, 6)
    unsigned = QuantConv2d(3, 4, 3, wbits=[8], abits=[2])
    signed = QuantConv2d(3, 4, 3, wbits=[8], abits=[2], signed_input=True)
    signed.load_state_dict(unsigned.state_dict())
    assert not unsigned.aq.b2.signed and signed.aq.b2.signed
    assert not torch.equal(unsigned(x, bits=(8, 2)), signed(x, bits=(8, 2)))  # negatives clip to 0 unsigned
    lin = QuantLinear(6, 3, wbits=[1], abits=[1])
    y = lin(torch.rand(5, 6), bits=(1, 1))
    assert y.shape == (5, 3)
    w = lin.wq.b1(lin.weight)  # sign quantizer: +-scale per output row
    assert torch.equal(w.abs(), lin.wq.b1.scale[:, None].expand_as(w))


def test_lsq_initialisation_and_state():
    q = LsqQuantizer(4, signed=True, channels=3)
    w = torch.tensor([[1.0, -1.0], [2.0, 2.0], [0.0, 0.0]])
    q.ensure_initialized(w)
    assert torch.allclose(q.scale, torch.tensor([2 * 1.0 / 7**0.5, 2 * 2.0 / 7**0.5, 1e-8]))
    assert bool(q.initialized)
    again = LsqQuantizer(4, signed=True, channels=3)
    again.load_state_dict(q.state_dict())
    again.ensure_initialized(torch.full((3, 2), 100.0))  # already initialised: keeps the loaded values
    assert torch.equal(again.scale, q.scale)
    a = LsqQuantizer(2, signed=False)
    a.ensure_initialized(torch.full((10,), 3.0))
    assert a.scale.item() == pytest.approx(2 * 3.0 / 3**0.5)


def test_quantizer_grads_are_lsq_scaled():
    q = LsqQuantizer(2, signed=True).train()
    q.scale.data.fill_(0.5)
    x = torch.tensor([0.2, 0.4, 5.0, -5.0])
    q(x).sum().backward()
    raw = (0 - 0.4) + (1 - 0.8) + 1 - 2
    assert q.scale.grad.item() == pytest.approx(raw / (4 * 1) ** 0.5)


def test_step_size_projection_keeps_eval_working():
    q = LsqQuantizer(2, signed=True, channels=2)
    q.ensure_initialized(torch.ones(2, 3))
    q.scale.data[1] = -0.2  # what an SGD overshoot leaves without the projection
    with pytest.raises(QuantError, match="scale must be finite and > 0"):
        q.eval()(torch.ones(2, 3))
    q.project_()
    assert q.scale[1].item() == pytest.approx(1e-8) and q.scale[0].item() > 0.1
    assert torch.isfinite(q.eval()(torch.ones(2, 3))).all()


@pytest.mark.parametrize("name", ["resnet18-mixed", "shufflenetv2-small-w48a8"])
def test_materialized_quantized_subnet_equals_supernet(name):
    space = get_space(name)
    torch.manual_seed(0)
    net = Supernet(space)
    rng = np.random.default_rng(0)
    _warm(net, space, rng, steps=2, batch=8)
    x = torch.randn(4, *space.input_shape)
    with torch.no_grad():
        for _ in range(2):
            arch = space.random_arch(rng)
            # as BN recalibration does before scoring: a train-mode pass on the path sets any step
            # size this path uses for the first time (from the supernet's full weights)
            net.train()(torch.randn(8, *space.input_shape), arch)
            sub = net.eval().materialize(arch).eval()
            torch.testing.assert_close(sub(x), net(x, arch), rtol=0, atol=1e-5)
            for q in quantizers(sub):  # every step size it uses came from the trained supernet
                assert bool(q.initialized)


def test_subnet_holds_only_its_own_bits():
    space = get_space("resnet18-mixed")
    arch = space.random_arch(np.random.default_rng(3))
    sub = Supernet(space).materialize(arch, copy_weights=False)
    for block, (w, a) in zip(sub.blocks, sub.block_bits):
        bns = [m for m in block.modules() if isinstance(m, BitsBatchNorm2d)]
        assert bns and all(list(bn.bns) == [f"w{w}a{a}"] for bn in bns)
        convs = [m for m in block.modules() if isinstance(m, QuantConv2d)]
        assert all(list(c.wq) == [f"b{w}"] and list(c.aq) == [f"b{a}"] for c in convs)
    stem = sub.stem.units[0].conv
    assert list(stem.wq) == ["b8"] and stem.aq.b8.signed  # the network input can be negative
    assert not sub.head.classifier.aq.b8.signed


def test_shufflenet_signed_inputs_follow_the_plan():
    """A pointwise conv after a depthwise conv + BN (no ReLU) sees signed inputs; the others do not."""
    space = get_space("shufflenetv2-small-w48a8")
    sub = Supernet(space).materialize(space.random_arch(np.random.default_rng(0)), copy_weights=False)
    for block in sub.blocks:
        prev_relu = True
        for unit in block.main:
            assert unit.conv.signed_input == (not prev_relu)
            prev_relu = unit.relu


def test_supernet_step_touches_only_the_path_and_its_bits():
    space = get_space("resnet18-mixed")
    net = Supernet(space).train()
    rng = np.random.default_rng(6)
    arch = space.random_arch(rng)
    net(torch.randn(4, *space.input_shape), arch).sum().backward()
    on_path = {id(p) for p in net.path_parameters(arch)}
    for name, p in net.named_parameters():
        if p.grad is not None:
            assert id(p) in on_path, name
    w, a = space.bits(arch.to_array()[0])
    conv = net.blocks[0][0].main[0].conv
    assert [k for k, q in conv.wq.items() if q.scale.grad is not None] == [f"b{w}"]
    assert [k for k, q in conv.aq.items() if q.scale.grad is not None] == [f"b{a}"]


def test_bn_recalibration_on_a_quantized_path():
    """Reset + cumulative average (momentum=None) touches only the BN of the bits a candidate runs."""
    space = get_space("resnet18-mixed")
    torch.manual_seed(0)
    net = Supernet(space)
    rng = np.random.default_rng(1)
    _warm(net, space, rng)
    arch = space.random_arch(rng)
    w, a = space.bits(arch.to_array()[0])
    bn_sets = net.blocks[0][0].main[0].bn.bns
    for m in net.modules():
        if isinstance(m, SliceBatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    xs = [torch.randn(8, *space.input_shape) for _ in range(3)]
    with torch.no_grad():
        for x in xs:
            net(x, arch)
    assert int(bn_sets[f"w{w}a{a}"].num_batches_tracked) == 3
    assert all(int(bn.num_batches_tracked) == 0 for key, bn in bn_sets.items() if key != f"w{w}a{a}")


def test_quant_layers_validate_choices():
    space = get_space("resnet18-mixed")
    with pytest.raises(QuantError, match="bit width 9"):
        quant_layers(space, bn_affine=True, bits_choices=[(9, 4)])
    layers = quant_layers(space, bn_affine=False)
    bn = layers.bn(8)
    assert len(bn.bns) == 4 * 4 + 1  # every (w, a) of the space + the fixed 8/8


def test_float_spaces_never_import_quant():
    code = (
        "import sys, torch\n"
        "from spos_hw.nas.spaces import get_space\n"
        "from spos_hw.nas.supernet import Supernet\n"
        "import numpy as np\n"
        "s = get_space('shufflenetv2-small-ch')\n"
        "net = Supernet(s); net.materialize(s.random_arch(np.random.default_rng(0)))\n"
        "assert not [m for m in sys.modules if m.startswith('spos_hw.quant')], 'quant imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
