"""BitOps = MACs x weight bits x activation bits: the additive table against the real modules, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import SubNet
from spos_hw.quant.layers import QuantConv2d, QuantLinear

def _measured(space, arch) -> tuple[int, int, int]:
    """FLOPs, params and BitOps of the real subnet (meta device): BitOps add up, per conv/linear
    call, MACs x the bits it was called with; FLOPs come from FlopCounterMode."""
    total = 0

    def hook(module, args, kwargs, out):
        nonlocal total
        x = args[0]
        bits = kwargs.get("bits", args[-1] if len(args) > 1 else None)
        if isinstance(module, QuantConv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = x.shape[1] if depthwise else module.groups  # FBNet's group-2 pointwise convs are not depthwise
            macs = out[0].numel() * (x.shape[1] // groups) * module.kernel_size[0] * module.kernel_size[1]
        else:
            macs = out[0].numel() * x.shape[1]
        total += macs * bits[0] * bits[1]

    with torch.device("meta"):
        net = SubNet(space, arch).eval()
    for m in net.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            m.register_forward_hook(hook, with_kwargs=True)
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(1, *space.input_shape, device="meta"))
    # LSQ step sizes (``.wq.`` / ``.aq.``) become Q/DQ scales; params count weights and BN affine
    params = sum(p.numel() for n, p in net.named_parameters() if ".wq." not in n and ".aq." not in n)
    return counter.get_total_flops() // 2, params, total


@pytest.mark.parametrize(
    "name, n", [("resnet18-mixed", 6), ("shufflenetv2-small-w48a8", 3), ("shufflenetv2-imagenet-w48a8", 1), ("fbnet-small-w48a8", 4)]
)
def test_cost_tables_match_real_modules(name, n):
    """FLOPs, params and BitOps tables against the real modules (the float spaces' twin of this
    check is tests/nas/test_space.py)."""
    space = get_space(name)
    rng = np.random.default_rng(0)
    archs = [space.random_arch(rng) for _ in range(n)]
    batch = space.encode(archs)
    expect = np.stack([space.flops.cost(batch), space.params.cost(batch), space.bitops.cost(batch)], 1)
    np.testing.assert_array_equal(expect, [_measured(space, a) for a in archs])


def test_uniform_2w2a_budget_by_hand():
    """The budget of the paper's comparison: every block at 2W2A, stem and head at 8/8."""
    space = get_space("resnet18-mixed")
    two = space.wbits.index(2)
    row = np.zeros((space.num_blocks, 4), dtype=np.int64)
    row[:, 1] = len(space.channel_scales) - 1  # full width
    row[:, 2] = row[:, 3] = two
    head_convs, linear = space.head_plan()
    fixed = sum(c.macs for c in space.stem_plan() + head_convs) + linear.macs
    blocks = sum(space.plan(p, row[p.index]).macs for p in space.positions)
    assert space.bitops.cost(row) == fixed * 64 + blocks * 4
    assert space.bitops.cost(row) == space.flops.cost(row) * 4 + fixed * 60


def test_bitops_is_a_vectorized_constraint():
    space = get_space("resnet18-mixed")
    model = space.cost_model("bitops")
    batch = space.sample(np.random.default_rng(1), 256)
    costs = model.cost(batch)
    lo, hi = model.bounds()
    assert costs.shape == (256,) and lo <= costs.min() and costs.max() <= hi
    assert model.scale == 1e9  # --bitops-g 0.08 means 8e7 BitOps


def test_info_reports_bitops(run_cli):
    space = get_space("resnet18-mixed")
    arch = "ch=2,2,2,2,2,2,2,2;w=1,1,1,1,1,1,1,1;a=1,1,1,1,1,1,1,1"
    res = run_cli("info", arch, "--space", "resnet18-mixed", "--json")
    assert res.code == 0, res.err
    out = json.loads(res.out)
    assert out["bitops"] == int(space.bitops.cost(space.arch(arch).to_array()))
    assert {b["wbits"] for b in out["blocks"]} == {2} and {b["abits"] for b in out["blocks"]} == {2}
    text = run_cli("info", arch, "--space", "resnet18-mixed")
    assert "bitops: " in text.out and "w2a2" in text.out
    float_info = json.loads(run_cli("info", ",".join(["0"] * 20), "--space", "shufflenetv2-small", "--json").out)
    assert "bitops" not in float_info
