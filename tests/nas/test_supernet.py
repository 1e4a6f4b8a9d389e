"""Supernet single-path forward, slicing, and materialized subnets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spos_hw.errors import ArchError
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import NotAChoice, Supernet
from spos_hw.nn.layers import SliceBatchNorm2d


def _warm_bn(net, space, rng, steps=4, batch=8):
    """Give BN running statistics non-trivial values by a few train-mode forwards."""
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.randn(batch, *space.input_shape), space.random_arch(rng))
    net.eval()


@pytest.mark.parametrize("name", ["shufflenetv2-small", "shufflenetv2-small-ch"])
def test_materialized_equals_supernet(name):
    space = get_space(name)
    torch.manual_seed(0)
    net = Supernet(space)
    rng = np.random.default_rng(0)
    _warm_bn(net, space, rng)
    x = torch.randn(4, *space.input_shape)
    with torch.no_grad():
        for _ in range(10):
            arch = space.random_arch(rng)
            sub = net.materialize(arch).eval()
            torch.testing.assert_close(sub(x), net(x, arch), rtol=0, atol=1e-5)


def test_materialized_equals_supernet_paper_space():
    space = get_space("shufflenetv2-imagenet-ch")
    torch.manual_seed(0)
    net = Supernet(space)
    rng = np.random.default_rng(1)
    _warm_bn(net, space, rng, steps=2, batch=2)
    x = torch.randn(1, *space.input_shape)
    with torch.no_grad():
        for _ in range(2):
            arch = space.random_arch(rng)
            torch.testing.assert_close(net.materialize(arch).eval()(x), net(x, arch), rtol=0, atol=1e-4)


def test_subnet_holds_only_chosen_ops():
    space = get_space("shufflenetv2-small-ch")
    net = Supernet(space)
    arch = space.random_arch(np.random.default_rng(5))
    sub = net.materialize(arch)
    assert sum(p.numel() for p in sub.parameters()) == space.params.cost(arch.to_array())
    assert len(sub.blocks) == space.num_blocks
    for pos, block in zip(space.positions, sub.blocks):
        mid = space.mid_choices(pos)[arch.channels[pos.index]]
        first_mid = next(u for u in block.main if u.mid_out)
        assert first_mid.conv.out_channels == mid


def test_fresh_materialize_does_not_copy():
    space = get_space("shufflenetv2-small")
    torch.manual_seed(0)
    net = Supernet(space)
    arch = space.arch([1] * 20)
    copied = net.materialize(arch)
    fresh = net.materialize(arch, copy_weights=False)
    w_sup = net.blocks[0][1].main[0].conv.weight
    assert torch.equal(copied.blocks[0].main[0].conv.weight, w_sup)
    assert not torch.equal(fresh.blocks[0].main[0].conv.weight, w_sup)


def test_forward_touches_only_the_path():
    space = get_space("shufflenetv2-small-ch")
    net = Supernet(space).train()
    arch = space.random_arch(np.random.default_rng(6))
    net(torch.randn(4, *space.input_shape), arch).sum().backward()
    on_path = {id(p) for p in net.path_parameters(arch)}
    for p in net.parameters():
        assert (p.grad is not None) == (id(p) in on_path)


def test_forward_rejects_bad_arch():
    space = get_space("shufflenetv2-small")
    net = Supernet(space)
    with pytest.raises(ArchError):
        net(torch.randn(1, *space.input_shape), get_space("shufflenetv2-small-ch").random_arch(np.random.default_rng(0)))


def test_sliced_bn_updates_only_its_slice():
    bn = SliceBatchNorm2d(8, affine=False, momentum=None).train()
    bn(torch.randn(16, 5, 3, 3) * 3 + 2)
    assert torch.all(bn.running_mean[:5] != 0) and torch.all(bn.running_mean[5:] == 0)
    assert torch.all(bn.running_var[5:] == 1)


def test_sliced_bn_cumulative_average_is_exact():
    bn = SliceBatchNorm2d(8, affine=False, momentum=None).train()
    xs = [torch.randn(4, 6, 2, 2) + i for i in range(3)]
    for x in xs:
        bn(x)
    expect = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
    torch.testing.assert_close(bn.running_mean[:6], expect)


@pytest.mark.parametrize("name", ["fbnet-small", "proxylessnas-small", "fbnet-small-w48a8"])
def test_supernet_has_no_module_for_a_disallowed_choice_and_materializes_exactly(name):
    space = get_space(name)
    torch.manual_seed(0)
    net = Supernet(space)
    skip = space.ops.index("skip")
    for pos, choices in zip(space.positions, net.blocks):
        allowed = skip in space.allowed_ops(pos)
        assert isinstance(choices[skip], NotAChoice) != allowed
        assert not list(choices[skip].parameters())
    rng = np.random.default_rng(0)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, *space.input_shape), space.random_arch(rng))
    net.eval()
    x = torch.randn(4, *space.input_shape)
    with torch.no_grad():
        for _ in range(4):
            arch = space.random_arch(rng)
            sub = net.materialize(arch).eval()
            torch.testing.assert_close(sub(x), net(x, arch), rtol=0, atol=1e-5)
            assert sum(p.numel() for n, p in sub.named_parameters() if ".wq." not in n and ".aq." not in n) == space.params.cost(
                arch.to_array()
            )


def test_forward_touches_only_the_path_and_skips_have_no_parameters():
    space = get_space("fbnet-small")
    net = Supernet(space).train()
    arch = space.arch(
        [
            8 if space.positions[i].stride == 1 and space.positions[i].in_channels == space.positions[i].out_channels else 5
            for i in range(22)
        ]
    )
    net(torch.randn(4, *space.input_shape), arch).sum().backward()
    on_path = {id(p) for p in net.path_parameters(arch)}
    assert on_path
    for p in net.parameters():
        assert (p.grad is not None) == (id(p) in on_path)
    bad = arch.to_array()
    bad[1, 0] = 8
    with pytest.raises(ArchError, match="block 1"):
        net(torch.randn(1, *space.input_shape), bad)
