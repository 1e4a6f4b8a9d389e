"""What the profiler measures: one unit per distinct block signature, the stem, the head, and
whole subnets (calibration, validation). Modules come from ``nas.blocks`` at the exact widths,
built lazily (torch is imported only when a unit is built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from spos_hw.nas.space import Arch, SearchSpace

STEM, HEAD = "stem", "head"
NET_PREFIX = "net:"


@dataclass(frozen=True)
class Unit:
    """One thing to time: ``key`` names its table entry, ``build()`` makes the eval-mode module."""

    key: str
    kind: str
    """``block``, ``stem``, ``head`` or ``net``."""
    input_shape: tuple[int, ...]
    """Including the batch dimension."""
    build: Callable[[], object]
    arch: Arch | None = None
    """The architecture of a ``net`` unit."""


def net_key(arch: Arch) -> str:
    return NET_PREFIX + str(arch)


def block_units(space: SearchSpace, batch_size: int) -> list[Unit]:
    """One unit per distinct ``space.signature``, in position / choice order."""
    seen: dict[str, Unit] = {}
    nop, nch, nw, na = space.sizes
    mask = space.choice_mask()
    for pos in space.positions:
        for choice in ((o, c, w, a) for o in range(nop) for c in range(nch) for w in range(nw) for a in range(na)):
            if not mask[(pos.index, *choice)]:
                continue
            key = space.signature(pos, choice)
            if key in seen:
                continue
            seen[key] = Unit(key, "block", (batch_size, pos.in_channels, *pos.in_hw), _block_builder(space, pos, choice))
    return list(seen.values())


def _block_builder(space: SearchSpace, pos, choice) -> Callable[[], object]:
    def build():
        from spos_hw.latency.modules import BlockAt
        from spos_hw.nas.blocks import build_block
        from spos_hw.nn.factory import layers_for

        bits = space.bits(choice)
        layers = layers_for(space, bn_affine=True, bits_choices=[bits])
        return BlockAt(build_block(space.plan(pos, choice), layers), bits).eval()

    return build


def head_input_shape(space: SearchSpace) -> tuple[int, int, int]:
    last = space.positions[-1]
    return (last.out_channels, *space.plan(last, (0, 0, 0, 0)).out_hw)


def fixed_units(space: SearchSpace, batch_size: int) -> list[Unit]:
    """The stem and the head (not searched: one entry each)."""

    def stem():
        from spos_hw.latency.modules import PartAt
        from spos_hw.nas.blocks import Stem
        from spos_hw.nn.factory import layers_for

        layers = layers_for(space, bn_affine=True, bits_choices=[space.fixed_bits])
        return PartAt(Stem(space.stem_plan(), layers), space.fixed_bits).eval()

    def head():
        from spos_hw.latency.modules import PartAt
        from spos_hw.nas.blocks import Head
        from spos_hw.nn.factory import layers_for

        layers = layers_for(space, bn_affine=True, bits_choices=[space.fixed_bits])
        head = Head(space.head_plan(), space.dropout, layers, signed_input=space.block_output_signed)
        return PartAt(head, space.fixed_bits).eval()

    return [
        Unit(STEM, "stem", (batch_size, *space.input_shape), stem),
        Unit(HEAD, "head", (batch_size, *head_input_shape(space)), head),
    ]


def net_unit(space: SearchSpace, arch: Arch, batch_size: int) -> Unit:
    """A whole subnet (``SubNet``, random init), measured end to end."""

    def build():
        from spos_hw.nas.supernet import SubNet

        return SubNet(space, arch).eval()

    return Unit(net_key(arch), "net", (batch_size, *space.input_shape), build, arch)


def table_units(space: SearchSpace, batch_size: int) -> list[Unit]:
    """Every unit of a table: the distinct blocks, then the stem and head."""
    return block_units(space, batch_size) + fixed_units(space, batch_size)


__all__ = ["HEAD", "STEM", "Unit", "block_units", "fixed_units", "head_input_shape", "net_key", "net_unit", "table_units"]
