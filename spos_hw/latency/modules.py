"""Thin wrappers giving a block, the stem or the head a plain ``forward(x)`` with fixed bits,
so exporters and timers call every unit the same way the subnet does."""

from __future__ import annotations

from torch import nn


class BlockAt(nn.Module):
    """``forward(x) = block(x, None, bits)``: a block at its exact width (``mid=None``)."""

    def __init__(self, block: nn.Module, bits) -> None:
        super().__init__()
        self.block, self.bits = block, bits

    def forward(self, x):
        return self.block(x, None, self.bits)


class PartAt(nn.Module):
    """``forward(x) = part(x, bits)`` for ``Stem`` and ``Head``."""

    def __init__(self, part: nn.Module, bits) -> None:
        super().__init__()
        self.part, self.bits = part, bits

    def forward(self, x):
        return self.part(x, self.bits)
