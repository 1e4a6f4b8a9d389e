"""The ResNet family of basic blocks, for the paper's mixed-precision search (torch-free plans)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from spos_hw.errors import SpaceError
from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec, Position, SearchSpace, Stage, stage_positions, stages_from

OPS = ("basic",)


@dataclass(frozen=True)
class ResNetSpace(SearchSpace):
    """Stem conv3x3 (+BN+ReLU), stages of basic blocks, global average pool, linear.

    A basic block is conv3x3 (in -> mid, stride s) + BN + ReLU, conv3x3 (mid -> out) + BN,
    plus the shortcut (identity, or conv1x1 stride s + BN when width or resolution changes),
    summed and passed through a ReLU. The searched width is ``mid``: the stage width times
    the block's channel scale. Bits are searched per block and apply to all its convs.
    """

    stem_channels: int = 64
    stem_stride: int = 1
    stages: tuple[Stage, ...] = ()
    dropout: float = 0.0

    family = "resnet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", stages_from(self.stages))
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise SpaceError(f"unknown ResNet ops {unknown}; known: {list(OPS)}")

    @cached_property
    def positions(self) -> tuple[Position, ...]:
        return stage_positions(self.stages, self.stem_channels, self.stem_plan()[-1].out_hw, mid_ratio=1.0)

    def block_plan(self, pos: Position, op: int, mid: int) -> BlockPlan:
        s, hw = pos.stride, pos.in_hw
        conv1 = ConvSpec(pos.in_channels, mid, 3, s, hw, mid_out=True)
        conv2 = ConvSpec(mid, pos.out_channels, 3, 1, conv1.out_hw, relu=False)
        proj: tuple[ConvSpec, ...] = ()
        if s != 1 or pos.in_channels != pos.out_channels:
            proj = (ConvSpec(pos.in_channels, pos.out_channels, 1, s, hw, relu=False),)
        return BlockPlan("residual", self.ops[op], pos.in_channels, pos.out_channels, s, hw, mid, (conv1, conv2), proj)

    def stem_plan(self) -> tuple[ConvSpec, ...]:
        c, h, w = self.input_shape
        return (ConvSpec(c, self.stem_channels, 3, self.stem_stride, (h, w)),)

    def head_plan(self) -> tuple[tuple[ConvSpec, ...], LinearSpec]:
        return (), LinearSpec(self.stages[-1].out_channels, self.num_classes)


MIXED_BITS = (1, 2, 3, 4)

SMALL = dict(
    input_shape=(1, 32, 32),
    num_classes=10,
    ops=OPS,
    stem_channels=24,
    stem_stride=2,
    stages=(Stage(2, 24, 1), Stage(2, 48), Stage(2, 96), Stage(2, 192)),
    dropout=0.0,
)
"""ResNet-18's layout (4 stages x 2 basic blocks) for 1x32x32 inputs, narrowed for CPU training:
stride-2 stem, stages at 16x16, 8x8, 4x4 and 2x2, widths 24/48/96/192."""
