"""Choice-block modules, built from the space's plans. The supernet, the materialized subnet,
the latency profiler and the exporter all build blocks here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec
from spos_hw.nn.factory import Layers

Bits = "tuple[int, int] | None"


class ConvBNAct(nn.Module):
    """conv -> BN -> optional ReLU, the unit every plan is made of.

    ``signed_input``: the unit's input can be negative (see ``build_units``).
    """

    def __init__(self, spec: ConvSpec, layers: Layers, signed_input: bool = False) -> None:
        super().__init__()
        self.conv = layers.conv(spec.cin, spec.cout, spec.k, spec.stride, spec.groups, signed_input=signed_input)
        self.bn = layers.bn(spec.cout)
        self.relu = spec.relu
        self.mid_out = spec.mid_out

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        x = self.bn(self.conv(x, mid if self.mid_out else None, bits), bits)
        return F.relu(x, inplace=True) if self.relu else x


def build_units(specs: tuple[ConvSpec, ...], layers: Layers, signed_first: bool = False) -> nn.ModuleList:
    """One ``ConvBNAct`` per spec of a branch, in order.

    A unit's input is signed when the unit before it ends without ReLU; the first unit's
    input is signed only if ``signed_first`` (the network input). Block inputs are outputs of
    ReLUs (the stem and every block end with one), hence non-negative.
    """
    out, signed = [], signed_first
    for spec in specs:
        out.append(ConvBNAct(spec, layers, signed))
        signed = not spec.relu
    return nn.ModuleList(out)


def _run(units: nn.ModuleList, x: torch.Tensor, mid: int | None, bits) -> torch.Tensor:
    for unit in units:
        x = unit(x, mid, bits)
    return x


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: split (or project) + main branch + concat; the split is the shuffle."""

    def __init__(self, plan: BlockPlan, layers: Layers) -> None:
        super().__init__()
        self.main = build_units(plan.main, layers)
        self.proj = build_units(plan.proj, layers)

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        if len(self.proj):
            keep = _run(self.proj, x, None, bits)
        else:
            keep, x = x[:, 0::2], x[:, 1::2]
        return torch.cat((keep, _run(self.main, x, mid, bits)), 1)


class ResidualBlock(nn.Module):
    """ResNet basic block: ``relu(main(x) + shortcut(x))``; the shortcut is the identity or the
    projection branch (conv1x1 + BN) when the block changes width or resolution."""

    def __init__(self, plan: BlockPlan, layers: Layers) -> None:
        super().__init__()
        self.main = build_units(plan.main, layers)
        self.proj = build_units(plan.proj, layers)

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        short = _run(self.proj, x, None, bits) if len(self.proj) else x
        return F.relu(_run(self.main, x, mid, bits) + short, inplace=True)


BLOCK_KINDS: dict[str, Callable[[BlockPlan, Layers], nn.Module]] = {"shuffle": ShuffleBlock, "residual": ResidualBlock}


def build_block(plan: BlockPlan, layers: Layers) -> nn.Module:
    """The module of one block plan (at the plan's mid-channel count)."""
    return BLOCK_KINDS[plan.kind](plan, layers)


class Stem(nn.Module):
    def __init__(self, plan: tuple[ConvSpec, ...], layers: Layers) -> None:
        super().__init__()
        self.units = build_units(plan, layers, signed_first=True)

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        return _run(self.units, x, None, bits)


class Head(nn.Module):
    """conv1x1 (+BN+ReLU) -> global average pool -> dropout -> linear."""

    def __init__(self, plan: tuple[tuple[ConvSpec, ...], LinearSpec], dropout: float, layers: Layers) -> None:
        super().__init__()
        convs, linear = plan
        self.units = build_units(convs, layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = layers.linear(linear.cin, linear.cout, linear.bias)

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        x = _run(self.units, x, None, bits)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x), bits)
