"""Choice-block modules, built from the space's plans. The supernet, the materialized subnet,
the latency profiler and the exporter all build blocks here, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from spos_hw.nas.space import BlockPlan, ConvSpec, LinearSpec, SESpec
from spos_hw.nn.factory import Layers

Bits = "tuple[int, int] | None"


class ConvBNAct(nn.Module):
    """conv -> BN -> optional activation (ReLU or h-swish), the unit every plan is made of.

    ``signed_input``: the unit's input can be negative (see ``build_units``).
    """

    def __init__(self, spec: ConvSpec, layers: Layers, signed_input: bool = False) -> None:
        super().__init__()
        self.conv = layers.conv(spec.cin, spec.cout, spec.k, spec.stride, spec.groups, signed_input=signed_input)
        self.bn = layers.bn(spec.cout)
        self.relu = spec.relu
        self.hswish = spec.relu and spec.act == "hswish"
        self.mid_out = spec.mid_out

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        x = self.bn(self.conv(x, mid if self.mid_out else None, bits), bits)
        if self.hswish:
            return F.hardswish(x)
        return F.relu(x, inplace=True) if self.relu else x


class FusedConvAct(nn.Module):
    """An eval-only ``ConvBNAct`` with its BN folded into the conv: ``act(conv(x) * s + t)`` as one conv.

    ``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``: the same function in exact arithmetic,
    one pass over the activations fewer (scoring candidates runs mostly this).
    """

    def __init__(self, unit: ConvBNAct) -> None:
        super().__init__()
        conv, bn = unit.conv, unit.bn
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
        self.register_buffer("weight", (conv.weight * scale.view(-1, 1, 1, 1)).detach().clone())
        self.register_buffer("bias", shift.detach().clone())
        self.stride, self.padding, self.groups = conv.stride, conv.padding, conv.groups
        self.relu, self.hswish = unit.relu, unit.hswish

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        if self.hswish:
            return F.hardswish(x)
        return F.relu(x, inplace=True) if self.relu else x


@torch.no_grad()
def fuse_bn_(net: nn.Module) -> nn.Module:
    """Fold every conv+BN unit of a float network at its exact widths (a ``SubNet``) in place, for eval."""
    for module in list(net.modules()):
        for name, child in module.named_children():
            if isinstance(child, ConvBNAct):
                setattr(module, name, FusedConvAct(child))
    return net.eval()


def build_units(specs: tuple[ConvSpec, ...], layers: Layers, signed_first: bool = False) -> nn.ModuleList:
    """One ``ConvBNAct`` per spec of a branch, in order.

    A unit's input is signed when the unit before it can output negative values (no ReLU, or
    h-swish); the first unit's input is signed only if ``signed_first`` (the network input, or
    a block input in a space whose blocks end linearly, ``SearchSpace.block_output_signed``).
    ShuffleNet and ResNet blocks end with a ReLU, so their inputs are non-negative.
    """
    out, signed = [], signed_first
    for spec in specs:
        out.append(ConvBNAct(spec, layers, signed))
        signed = spec.signed_output
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


class SqueezeExcite(nn.Module):
    """MobileNetV3's SE: ``x * hardsigmoid(fc2(relu(fc1(avgpool(x)))))`` with biased linears."""

    def __init__(self, spec: SESpec, layers: Layers, signed_input: bool) -> None:
        super().__init__()
        self.fc1 = layers.linear(spec.channels, spec.reduced, True, signed_input=signed_input)
        self.fc2 = layers.linear(spec.reduced, spec.channels, True, signed_input=False)

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        s = self.fc2(F.relu(self.fc1(s, bits)), bits)
        return x * F.hardsigmoid(s)[:, :, None, None]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """``[N, g*c, H, W] -> [N, c*g, H, W]``: channel j of group i moves to position j*g + i."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class MBConvBlock(nn.Module):
    """Inverted residual: [pw expand (grouped: + channel shuffle)] -> dw kxk -> [SE] -> pw linear,
    plus the input when the block keeps stride 1 and width (MobileNetV2, FBNet, MobileNetV3).

    The block's input is a linear bottleneck (signed), so its first unit quantizes signed.
    """

    def __init__(self, plan: BlockPlan, layers: Layers) -> None:
        super().__init__()
        self.main = build_units(plan.main, layers, signed_first=True)
        first = plan.main[0]
        self.shuffle = first.groups if first.groups > 1 and not first.depthwise else 0
        self.se = SqueezeExcite(plan.se, layers, plan.main[-2].signed_output) if plan.se else None
        self.residual = plan.stride == 1 and plan.in_channels == plan.out_channels

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        y = x
        last = len(self.main) - 1
        for i, unit in enumerate(self.main):
            if i == last and self.se is not None:
                y = self.se(y, bits)
            y = unit(y, mid, bits)
            if i == 0 and self.shuffle:
                y = channel_shuffle(y, self.shuffle)
        return y + x if self.residual else y


class IdentityBlock(nn.Module):
    """A skip choice: the block's output is its input (no layers, no cost)."""

    def __init__(self, plan: BlockPlan, layers: Layers) -> None:
        super().__init__()
        if plan.stride != 1 or plan.in_channels != plan.out_channels:
            raise ValueError(
                f"an identity block cannot change width or stride ({plan.in_channels}->{plan.out_channels}, stride {plan.stride})"
            )

    def forward(self, x: torch.Tensor, mid: int | None = None, bits=None) -> torch.Tensor:
        return x


BLOCK_KINDS: dict[str, Callable[[BlockPlan, Layers], nn.Module]] = {
    "shuffle": ShuffleBlock,
    "residual": ResidualBlock,
    "mbconv": MBConvBlock,
    "identity": IdentityBlock,
}


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

    def __init__(
        self, plan: tuple[tuple[ConvSpec, ...], LinearSpec], dropout: float, layers: Layers, signed_input: bool = False
    ) -> None:
        super().__init__()
        convs, linear = plan
        self.units = build_units(convs, layers, signed_first=signed_input)
        self.dropout = nn.Dropout(dropout)
        self.classifier = layers.linear(
            linear.cin, linear.cout, linear.bias, signed_input=convs[-1].signed_output if convs else signed_input
        )

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        x = _run(self.units, x, None, bits)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(self.dropout(x), bits)
