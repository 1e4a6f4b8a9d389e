"""Choice-block modules, built from the space's plans. The supernet, the materialized subnet,
the latency profiler and the exporter all build blocks here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spos_hw.nas.layers import Layers
from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec

Bits = "tuple[int, int] | None"


class ConvBNAct(nn.Module):
    """conv -> BN -> optional ReLU, the unit every plan is made of."""

    def __init__(self, spec: ConvSpec, layers: Layers) -> None:
        super().__init__()
        self.conv = layers.conv(spec.cin, spec.cout, spec.k, spec.stride, spec.groups)
        self.bn = layers.bn(spec.cout)
        self.relu = spec.relu
        self.mid_out = spec.mid_out

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        x = self.bn(self.conv(x, mid if self.mid_out else None, bits), bits)
        return F.relu(x, inplace=True) if self.relu else x


def _run(units: nn.ModuleList, x: torch.Tensor, mid: int | None, bits) -> torch.Tensor:
    for unit in units:
        x = unit(x, mid, bits)
    return x


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 unit: split (or project) + main branch + concat; the split is the shuffle."""

    def __init__(self, plan: BlockPlan, layers: Layers) -> None:
        super().__init__()
        self.main = nn.ModuleList(ConvBNAct(s, layers) for s in plan.main)
        self.proj = nn.ModuleList(ConvBNAct(s, layers) for s in plan.proj)

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        if len(self.proj):
            keep = _run(self.proj, x, None, bits)
        else:
            keep, x = x[:, 0::2], x[:, 1::2]
        return torch.cat((keep, _run(self.main, x, mid, bits)), 1)


BLOCK_KINDS: dict[str, Callable[[BlockPlan, Layers], nn.Module]] = {"shuffle": ShuffleBlock}


def build_block(plan: BlockPlan, layers: Layers) -> nn.Module:
    """The module of one block plan (at the plan's mid-channel count)."""
    return BLOCK_KINDS[plan.kind](plan, layers)


class Stem(nn.Module):
    def __init__(self, plan: tuple[ConvSpec, ...], layers: Layers) -> None:
        super().__init__()
        self.units = nn.ModuleList(ConvBNAct(s, layers) for s in plan)

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        return _run(self.units, x, None, bits)


class Head(nn.Module):
    """conv1x1 (+BN+ReLU) -> global average pool -> dropout -> linear."""

    def __init__(self, plan: tuple[tuple[ConvSpec, ...], LinearSpec], dropout: float, layers: Layers) -> None:
        super().__init__()
        convs, linear = plan
        self.units = nn.ModuleList(ConvBNAct(s, layers) for s in convs)
        self.dropout = nn.Dropout(dropout)
        self.classifier = layers.linear(linear.cin, linear.cout, linear.bias)

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        x = _run(self.units, x, None, bits)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x), bits)
