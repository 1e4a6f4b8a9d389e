"""The MobileNet family of inverted-residual blocks: FBNet and ProxylessNAS spaces (torch-free plans).

A candidate is named by its parts, so one family covers FBNet, ProxylessNAS and
MobileNetV3-style spaces:

- ``k{K}_e{E}``: 1x1 expand conv (``in -> round(in * E)``) + BN + ReLU, depthwise KxK
  (stride of the block) + BN + ReLU, 1x1 linear projection + BN. With ``E = 1`` the
  expand conv is still there (``in -> in``), as in FBNet's blocks (facebookresearch
  maskrcnn-benchmark ``fbnet_builder.IRFBlock``) and timm's ``fbnetc_100``.
- ``_g{G}``: both 1x1 convs grouped (G groups), with a channel shuffle after the expand
  conv (FBNet's ``k3_e1_g2``).
- ``_se``: squeeze-and-excitation on the depthwise output (MobileNetV3: reduced width
  ``make_divisible(mid / 4, 8)``, ReLU, hard sigmoid).
- ``_hs``: h-swish instead of ReLU in the expand and depthwise units (MobileNetV3).
- ``skip``: the identity. It is a choice only where the block keeps stride 1 and width
  (``position_mask``); elsewhere an architecture that picks it is refused.

The block adds its input to its output when it keeps stride 1 and width. Its output is
linear (no activation), hence ``block_output_signed``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from spos_hw.errors import SpaceError
from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec, Position, SearchSpace, SESpec, Stage, stage_positions, stages_from

SKIP = "skip"
_OP = re.compile(r"k(?P<k>[1-9]\d*)_e(?P<e>\d+(?:\.\d+)?)(?:_g(?P<g>[1-9]\d*))?(?P<se>_se)?(?P<hs>_hs)?")


@dataclass(frozen=True)
class Candidate:
    """A parsed candidate name."""

    kernel: int
    expand: float
    groups: int = 1
    se: bool = False
    hswish: bool = False


def parse_op(name: str) -> Candidate | None:
    """The candidate ``name`` describes; ``None`` for ``skip``. Unknown names are a ``SpaceError``."""
    if name == SKIP:
        return None
    m = _OP.fullmatch(name)
    if m is None or int(m["k"]) % 2 == 0 or float(m["e"]) <= 0:
        raise SpaceError(
            f"unknown mbconv candidate {name!r}; write k{{odd kernel}}_e{{expansion}}[_g{{groups}}][_se][_hs] or {SKIP!r}"
        )
    return Candidate(int(m["k"]), float(m["e"]), int(m["g"] or 1), bool(m["se"]), bool(m["hs"]))


def make_divisible(v: float, divisor: int = 8) -> int:
    """The nearest multiple of ``divisor`` (at least ``divisor``), never below 90% of ``v`` (MobileNet's rule)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


@dataclass(frozen=True)
class MBConvSpace(SearchSpace):
    """Stem conv3x3 (+BN+ReLU) [+ a fixed depthwise-separable block], stages of searched
    inverted-residual blocks, conv1x1 head (+BN+ReLU), global pool, dropout, linear with bias.

    ``first_block``: output width of ProxylessNAS's / MobileNetV2's fixed first block
    (depthwise 3x3 + BN + ReLU, pointwise linear + BN, no expansion, no residual), part of
    the stem; 0 for none (FBNet).
    """

    stem_channels: int = 16
    stem_stride: int = 2
    first_block: int = 0
    stages: tuple[Stage, ...] = ()
    head_channels: int = 1984
    dropout: float = 0.2

    family = "mbconv"
    block_output_signed = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", stages_from(self.stages))
        for name in self.ops:
            parse_op(name)
        if len(set(self.ops)) != len(self.ops):
            raise SpaceError(f"mbconv candidates must be distinct, got {list(self.ops)}")
        if tuple(self.channel_scales) != (1.0,):
            raise SpaceError("the mbconv family searches width through its expansion ratios; channel_scales must be (1.0,)")
        if not self.stages or self.head_channels < 1:
            raise SpaceError("an mbconv space needs at least one stage and a head width >= 1")
        for pos in self.positions:
            for name in self.ops:
                c = parse_op(name)
                if c is None:
                    continue
                mid = self._mid(pos, c)
                for width in (pos.in_channels, mid, pos.out_channels):
                    if width % c.groups:
                        raise SpaceError(
                            f"block {pos.index}: {name} needs widths divisible by {c.groups}, got {pos.in_channels}->{mid}->{pos.out_channels}"
                        )

    # --- structure
    @cached_property
    def positions(self) -> tuple[Position, ...]:
        c = self.first_block or self.stem_channels
        return stage_positions(self.stages, c, self.stem_plan()[-1].out_hw, mid_ratio=1.0)

    @staticmethod
    def _mid(pos: Position, c: Candidate) -> int:
        return max(1, int(round(pos.in_channels * c.expand)))

    def skippable(self, pos: Position) -> bool:
        """Whether ``skip`` is a choice at ``pos``: only where the block keeps stride 1 and width."""
        return pos.stride == 1 and pos.in_channels == pos.out_channels

    def position_mask(self, pos: Position) -> np.ndarray | None:
        if SKIP not in self.ops:
            return None
        m = np.ones(self.sizes, dtype=bool)
        s = self.ops.index(SKIP)
        m[s] = False
        if self.skippable(pos):
            m[s, 0, 0, 0] = True  # the identity has no width or bit choices: only their first index
        return m

    def choice_rule(self, pos: Position, choice: Sequence[int]) -> str:
        if self.ops[choice[0]] == SKIP and not self.skippable(pos):
            return "skip is the identity, so it cannot change width or stride"
        if self.ops[choice[0]] == SKIP:
            return "skip has no layers, so its width and bit indices must be 0"
        return super().choice_rule(pos, choice)

    def block_plan(self, pos: Position, op: int, mid: int) -> BlockPlan:
        """The plan of candidate ``op`` at ``pos`` (``mid`` is unused: the candidate's expansion sets it)."""
        name = self.ops[op]
        c = parse_op(name)
        s, hw = pos.stride, pos.in_hw
        if c is None:
            if not self.skippable(pos):
                raise SpaceError(
                    f"block {pos.index}: skip is not a choice here ({pos.in_channels}->{pos.out_channels}, stride {s})"
                )
            return BlockPlan("identity", name, pos.in_channels, pos.out_channels, 1, hw, pos.in_channels, ())
        m = self._mid(pos, c)
        act = "hswish" if c.hswish else "relu"
        expand = ConvSpec(pos.in_channels, m, 1, 1, hw, groups=c.groups, act=act)
        dw = ConvSpec(m, m, c.kernel, s, hw, groups=m, act=act)
        project = ConvSpec(m, pos.out_channels, 1, 1, dw.out_hw, groups=c.groups, relu=False)
        se = SESpec(m, make_divisible(m / 4)) if c.se else None
        return BlockPlan("mbconv", name, pos.in_channels, pos.out_channels, s, hw, m, (expand, dw, project), se=se)

    def stem_plan(self) -> tuple[ConvSpec, ...]:
        c, h, w = self.input_shape
        conv = ConvSpec(c, self.stem_channels, 3, self.stem_stride, (h, w))
        if not self.first_block:
            return (conv,)
        dw = ConvSpec(self.stem_channels, self.stem_channels, 3, 1, conv.out_hw, groups=self.stem_channels)
        return conv, dw, ConvSpec(self.stem_channels, self.first_block, 1, 1, dw.out_hw, relu=False)

    def head_plan(self) -> tuple[tuple[ConvSpec, ...], LinearSpec]:
        last = self.positions[-1]
        hw = ((last.in_hw[0] - 1) // last.stride + 1, (last.in_hw[1] - 1) // last.stride + 1)
        conv = ConvSpec(last.out_channels, self.head_channels, 1, 1, hw)
        return (conv,), LinearSpec(self.head_channels, self.num_classes, bias=True)


FBNET_OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", SKIP)
"""FBNet's 9 candidates, in the paper's order."""

PROXYLESS_OPS = ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", SKIP)
"""ProxylessNAS's ``3x3_MBConv3 .. 7x7_MBConv6`` and its zero op (a skip where the block has a shortcut)."""

FBNET_IMAGENET = dict(
    input_shape=(3, 224, 224),
    num_classes=1000,
    ops=FBNET_OPS,
    stem_channels=16,
    stem_stride=2,
    stages=(Stage(1, 16, 1), Stage(4, 24), Stage(4, 32), Stage(4, 64), Stage(4, 112, 1), Stage(4, 184), Stage(1, 352, 1)),
    head_channels=1984,
    dropout=0.2,
)
"""FBNet's macro-architecture (FBNet paper, Table 1): 22 searched layers, head 1984."""

FBNET_SMALL = dict(
    input_shape=(1, 32, 32),
    num_classes=10,
    ops=FBNET_OPS,
    stem_channels=8,
    stem_stride=2,
    stages=(Stage(1, 8, 1), Stage(4, 16, 1), Stage(4, 24), Stage(4, 32), Stage(4, 56, 1), Stage(4, 96, 1), Stage(1, 176, 1)),
    head_channels=512,
    dropout=0.1,
)
"""The same 22 layers and 9 candidates on 1x32x32 inputs: half FBNet's widths, stem stride 2,
then two downsamplings (16x16, 8x8, 4x4) instead of five, head 512 (docs/spaces.md: sizing)."""

PROXYLESS_IMAGENET = dict(
    input_shape=(3, 224, 224),
    num_classes=1000,
    ops=PROXYLESS_OPS,
    stem_channels=32,
    stem_stride=2,
    first_block=16,
    stages=(Stage(4, 24), Stage(4, 40), Stage(4, 80), Stage(4, 96, 1), Stage(4, 192), Stage(1, 320, 1)),
    head_channels=1280,
    dropout=0.1,
)
"""ProxylessNAS's search space at width 1.0 (mit-han-lab/proxylessnas, ``search/imagenet_arch_search.py``
defaults and ``super_proxyless.py``): stem 32, fixed MBConv1 3x3 to 16, 21 searched layers
(widths 24/40/80/96/192/320, 4/4/4/4/4/1 cells, strides 2/2/2/1/2/1), feature mix 1280."""

PROXYLESS_GPU_IMAGENET = dict(
    PROXYLESS_IMAGENET,
    stem_channels=40,
    first_block=24,
    stages=(Stage(4, 32), Stage(4, 56), Stage(4, 112), Stage(4, 128, 1), Stage(4, 256), Stage(1, 432, 1)),
    head_channels=1728,
)
"""The same space at ProxylessNAS's width multiplier 1.35 (every width ``make_divisible(w * 1.35, 8)``):
the widths of the published ProxylessNAS-GPU network, the space of the SPOS paper's Table 5."""

PROXYLESS_SMALL = dict(
    input_shape=(1, 32, 32),
    num_classes=10,
    ops=PROXYLESS_OPS,
    stem_channels=16,
    stem_stride=2,
    first_block=8,
    stages=(Stage(4, 16), Stage(4, 24, 1), Stage(4, 40), Stage(4, 48, 1), Stage(4, 96, 1), Stage(1, 160, 1)),
    head_channels=512,
    dropout=0.1,
)
"""The same 21 layers and 7 candidates on 1x32x32 inputs: about half the widths, stem stride 2
(the fixed first block at 16x16), then two downsamplings instead of four (searched stages at
8x8, 8x8, 4x4, 4x4, 4x4, 4x4), head 512 (docs/spaces.md: sizing)."""

__all__ = [
    "FBNET_IMAGENET",
    "FBNET_OPS",
    "FBNET_SMALL",
    "PROXYLESS_GPU_IMAGENET",
    "PROXYLESS_IMAGENET",
    "PROXYLESS_OPS",
    "PROXYLESS_SMALL",
    "SKIP",
    "Candidate",
    "MBConvSpace",
    "make_divisible",
    "parse_op",
]
