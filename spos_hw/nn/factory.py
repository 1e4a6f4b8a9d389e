"""The ``Layers`` bundle the blocks are built from, and a registry of layer kinds.

Blocks never fork for quantization: they take a ``Layers`` bundle of factories. Kinds are
registered by name; a kind whose builder lives in a consumer package (``quant``) is registered
by import path and resolved on first use, as timm's ``create_act`` resolves layers by name, so
this leaf package imports nothing above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spos_hw.errors import SpaceError


@dataclass(frozen=True)
class Layers:
    """Factories the blocks are built from; quantization swaps them, never the blocks.

    ``conv(cin, cout, k, stride, groups, *, signed_input)``, ``bn(c)`` and
    ``linear(cin, cout, bias, *, signed_input)``. ``signed_input`` tells whether the layer's
    input can be negative (quantizing layers pick signed or unsigned activation ranges from it;
    float layers ignore it).
    """

    conv: Callable[..., Any]
    bn: Callable[[int], Any]
    linear: Callable[..., Any]


def float_layers(space: Any = None, *, bn_affine: bool, bits_choices: Any = None) -> Layers:
    """The channel-sliceable float layers (``space`` and ``bits_choices`` are ignored)."""
    from spos_hw.nn.layers import Linear, SliceBatchNorm2d, SliceConv2d

    def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, *, signed_input: bool = False) -> SliceConv2d:
        return SliceConv2d(cin, cout, k, stride, groups)

    def linear(cin: int, cout: int, bias: bool = False, *, signed_input: bool = False) -> Linear:
        return Linear(cin, cout, bias=bias)

    return Layers(conv=conv, bn=lambda c: SliceBatchNorm2d(c, affine=bn_affine), linear=linear)


_KINDS: dict[str, Callable[..., Layers] | str] = {
    "float": float_layers,
    "quant": "spos_hw.quant.layers:quant_layers",
}


def register_layers(kind: str, builder: Callable[..., Layers] | str) -> None:
    """Register ``builder(space, *, bn_affine, bits_choices) -> Layers`` (or its ``module:name``)."""
    if kind in _KINDS:
        raise SpaceError(f"layer kind {kind!r} is already registered")
    _KINDS[kind] = builder


def _resolve(kind: str) -> Callable[..., Layers]:
    builder = _KINDS.get(kind)
    if builder is None:
        raise SpaceError(f"unknown layer kind {kind!r}; known: {', '.join(sorted(_KINDS))}")
    if isinstance(builder, str):
        module, _, name = builder.partition(":")
        builder = _KINDS[kind] = getattr(importlib.import_module(module), name)
    return builder


def create_layers(kind: str, space: Any = None, *, bn_affine: bool, bits_choices: Any = None) -> Layers:
    """The ``Layers`` of a registered kind."""
    return _resolve(kind)(space, bn_affine=bn_affine, bits_choices=bits_choices)


def layers_for(space: Any, *, bn_affine: bool, bits_choices: Any = None) -> Layers:
    """The layer factories a space needs: float ones, or quantizing ones for quantized spaces."""
    return create_layers("quant" if space.quantized else "float", space, bn_affine=bn_affine, bits_choices=bits_choices)


__all__ = ["Layers", "create_layers", "float_layers", "layers_for", "register_layers"]
