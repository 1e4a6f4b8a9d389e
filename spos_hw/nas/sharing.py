"""How the choices of a supernet block share weights, decided from their plans.

- ``independent``: every choice of a block has its own weights (the SPOS paper).
- ``entangled``: choices whose plans are the same up to kernel sizes and channel widths share
  one weight tensor per conv, stored at the largest shape of the group. Each choice uses the
  first channels and the centre ``k x k`` of the stored kernel (Once-for-All's elastic kernel,
  AutoFormer's weight entanglement). In the ShuffleNetV2 family, shuffle3x3/5x5/7x7 share
  their pointwise convs and their depthwise kernels are centre crops of one 7x7 kernel;
  Xception (another plan structure) keeps its own weights. BN layers (hence statistics) and
  quantizer step sizes stay per choice.

Nothing here names an op: the group key is the plan with kernel sizes and widths left out, so
any family gets entanglement from its plans (an MBConv family's k3/k5/k7 x e3/e6 choices
would share one expand, depthwise and project weight per block, the narrower ratios taking
the first channels). Sharing is parameter tying: each member conv's ``weight`` is the same
``nn.Parameter``, so state-dict keys stay per choice (a tied tensor is saved once, it just has
several names) and ``SliceConv2d.own_weight`` crops it at forward time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from spos_hw.errors import ConfigError
from spos_hw.nas.blocks import ConvBNAct
from spos_hw.nas.space import BlockPlan, ConvSpec

SHARING_MODES: tuple[str, ...] = ("independent", "entangled")
DEFAULT_SHARING = "entangled"
"""The default of new supernets: measured to learn and rank far better (docs/training.md)."""
LEGACY_SHARING = "independent"
"""What a checkpoint without a recorded mode was trained with (every checkpoint before the modes)."""


def check_sharing(mode: str) -> str:
    if mode not in SHARING_MODES:
        raise ConfigError(f"unknown weight sharing {mode!r}; choose one of {', '.join(SHARING_MODES)}")
    return mode


def conv_key(spec: ConvSpec) -> tuple:
    """A conv's structure without its kernel size and channel widths."""
    return (spec.stride, spec.in_hw, spec.relu, spec.act, spec.mid_out, spec.depthwise, 0 if spec.depthwise else spec.groups)


def group_key(plan: BlockPlan) -> tuple:
    """Plans with equal keys differ only in kernel sizes and widths: their weights can be entangled."""
    return (plan.kind, tuple(conv_key(c) for c in plan.main), tuple(conv_key(c) for c in plan.proj))


def share_groups(plans: Sequence[BlockPlan]) -> list[tuple[int, ...]]:
    """Choice indices of a block grouped by ``group_key``, in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, plan in enumerate(plans):
        groups.setdefault(group_key(plan), []).append(i)
    return [tuple(g) for g in groups.values()]


def plan_convs(op: nn.Module) -> list[nn.Module]:
    """The conv layers of a block module in plan order (``plan.convs``: main branch, then projection)."""
    return [u.conv for u in op.modules() if isinstance(u, ConvBNAct)]


def _fresh_weight(shape: tuple[int, ...]) -> nn.Parameter:
    w = torch.empty(shape)
    nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's default
    return nn.Parameter(w)


def entangle(ops: Sequence[nn.Module], plans: Sequence[BlockPlan]) -> list[tuple[int, ...]]:
    """Tie the conv weights of ``ops`` (one block's choices, built from ``plans``) group by group.

    Each shared tensor has, per dimension, the largest size of its group; it is the weight of
    the member that has that shape (so nothing new is drawn in the usual case), else a fresh
    one with ``nn.Conv2d``'s initialisation. Returns the groups (``share_groups``).
    """
    groups = share_groups(plans)
    for group in groups:
        if len(group) < 2:
            continue
        convs = [plan_convs(ops[i]) for i in group]
        for i, cs in zip(group, convs):
            if len(cs) != len(plans[i].convs):
                raise RuntimeError(f"choice {i}: {len(cs)} conv modules but its plan lists {len(plans[i].convs)}")
        for members in zip(*convs):
            shape = tuple(max(m.weight.shape[d] for m in members) for d in range(members[0].weight.dim()))
            owner = next((m for m in members if tuple(m.weight.shape) == shape), None)
            weight = owner.weight if owner is not None else _fresh_weight(shape)
            for m in members:
                m.weight = weight
    return groups


__all__ = [
    "DEFAULT_SHARING",
    "LEGACY_SHARING",
    "SHARING_MODES",
    "check_sharing",
    "entangle",
    "group_key",
    "plan_convs",
    "share_groups",
]
