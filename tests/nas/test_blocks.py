"""Block modules built from plans: the inverted residual's channel shuffle and residual add."""

from __future__ import annotations

import torch

from spos_hw.nas.blocks import MBConvBlock, build_block, channel_shuffle
from spos_hw.nas.spaces import get_space
from spos_hw.nn.factory import float_layers


def test_grouped_block_shuffles_channels_and_residual_is_added():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    space = get_space("fbnet-small")
    pos = space.positions[2]  # 16 -> 16, stride 1
    block = build_block(space.plan(pos, (1, 0, 0, 0)), float_layers(bn_affine=True)).eval()
    assert isinstance(block, MBConvBlock) and block.shuffle == 2 and block.residual
    assert block.main[0].conv.groups == 2 and block.main[2].conv.groups == 2
    x = torch.randn(2, 16, *pos.in_hw)
    with torch.no_grad():
        y = x
        for i, unit in enumerate(block.main):
            y = unit(y)
            y = channel_shuffle(y, 2) if i == 0 else y
        torch.testing.assert_close(block(x), y + x)
