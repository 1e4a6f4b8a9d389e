"""The ShuffleNetV2 choice-block family of the SPOS paper (torch-free plans)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec, Position, SearchSpace, Stage, stage_positions, stages_from

OPS = ("shuffle3x3", "shuffle5x5", "shuffle7x7", "xception")
KERNELS = {"shuffle3x3": 3, "shuffle5x5": 5, "shuffle7x7": 7, "xception": 3}


@dataclass(frozen=True)
class ShuffleNetV2Space(SearchSpace):
    """Stem conv3x3, stages of ShuffleNetV2 choice blocks, conv1x1 head, pool, dropout, linear.

    The first block of a stage takes the full input and adds a projection branch (it changes
    width or resolution); the others split the channels in half and transform one half.
    """

    stem_channels: int = 16
    stem_stride: int = 2
    stages: tuple[Stage, ...] = ()
    head_channels: int = 1024
    dropout: float = 0.1

    family = "shufflenetv2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", stages_from(self.stages))
        unknown = [op for op in self.ops if op not in KERNELS]
        if unknown:
            from spos_hw.errors import SpaceError

            raise SpaceError(f"unknown ShuffleNetV2 ops {unknown}; known: {list(OPS)}")

    @cached_property
    def positions(self) -> tuple[Position, ...]:
        return stage_positions(self.stages, self.stem_channels, self.stem_plan()[-1].out_hw, mid_ratio=0.5)

    def block_plan(self, pos: Position, op: int, mid: int) -> BlockPlan:
        name = self.ops[op]
        k = KERNELS[name]
        down = pos.stride != 1 or pos.in_channels != pos.out_channels
        inp = pos.in_channels if down else pos.in_channels // 2
        outputs = pos.out_channels - inp
        hw, s = pos.in_hw, pos.stride
        if name == "xception":
            dw1 = ConvSpec(inp, inp, 3, s, hw, groups=inp, relu=False)
            o = dw1.out_hw
            main = (
                dw1,
                ConvSpec(inp, mid, 1, 1, o, mid_out=True),
                ConvSpec(mid, mid, 3, 1, o, groups=mid, relu=False),
                ConvSpec(mid, mid, 1, 1, o, mid_out=True),
                ConvSpec(mid, mid, 3, 1, o, groups=mid, relu=False),
                ConvSpec(mid, outputs, 1, 1, o),
            )
        else:
            dw = ConvSpec(mid, mid, k, s, hw, groups=mid, relu=False)
            main = (ConvSpec(inp, mid, 1, 1, hw, mid_out=True), dw, ConvSpec(mid, outputs, 1, 1, dw.out_hw))
        proj: tuple[ConvSpec, ...] = ()
        if down:
            pdw = ConvSpec(inp, inp, k, s, hw, groups=inp, relu=False)
            proj = (pdw, ConvSpec(inp, inp, 1, 1, pdw.out_hw))
        return BlockPlan("shuffle", name, pos.in_channels, pos.out_channels, s, hw, mid, main, proj)

    def stem_plan(self) -> tuple[ConvSpec, ...]:
        c, h, w = self.input_shape
        return (ConvSpec(c, self.stem_channels, 3, self.stem_stride, (h, w)),)

    def head_plan(self) -> tuple[tuple[ConvSpec, ...], LinearSpec]:
        last = self.positions[-1]
        hw = ((last.in_hw[0] - 1) // last.stride + 1, (last.in_hw[1] - 1) // last.stride + 1)
        if self.head_channels:
            conv = (ConvSpec(last.out_channels, self.head_channels, 1, 1, hw),)
            return conv, LinearSpec(self.head_channels, self.num_classes)
        return (), LinearSpec(last.out_channels, self.num_classes)


PAPER_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)

IMAGENET = dict(
    input_shape=(3, 224, 224),
    num_classes=1000,
    ops=OPS,
    stem_channels=16,
    stem_stride=2,
    stages=(Stage(4, 64), Stage(4, 160), Stage(8, 320), Stage(4, 640)),
    head_channels=1024,
    dropout=0.1,
)
"""The paper's space: 20 blocks x 4 ops (FACTS.md); 322,918,720 FLOPs for the released arch."""

SMALL = dict(
    input_shape=(1, 32, 32),
    num_classes=10,
    ops=OPS,
    stem_channels=16,
    stem_stride=2,
    stages=(Stage(4, 32, 1), Stage(8, 64), Stage(8, 128)),
    head_channels=256,
    dropout=0.1,
)
"""The same 20 choice blocks for 32x32 inputs (Fashion-MNIST padded from 28x28): three
downsamplings instead of five (stem, then stages at 16x16, 8x8 and 4x4) and widths 32/64/128.
Sized for CPU training: one supernet step at batch 128 takes ~0.3 s on 2 cores (channels_last).
"""
