"""Registry of search spaces. ``get_space("name[:key=value,...]")`` or a path to a space JSON file.

Overrides adapt a registered space to a dataset: ``classes`` (number of classes), ``channels``
(input channels) and ``size`` (input height = width), for example
``shufflenetv2-small:classes=100,channels=3``. The override string is part of the name, so
every artifact made with it records the adapted space and its own fingerprint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spos_hw.errors import ArchError, ArtifactError, ArtifactMismatch, SpaceError
from spos_hw.nas.space import Arch, SearchSpace
from spos_hw.nas.spaces.mbconv import (
    FBNET_IMAGENET,
    FBNET_SMALL,
    PROXYLESS_GPU_IMAGENET,
    PROXYLESS_IMAGENET,
    PROXYLESS_SMALL,
    MBConvSpace,
)
from spos_hw.nas.spaces.resnet import MIXED_BITS, ResNetSpace
from spos_hw.nas.spaces.resnet import SMALL as RESNET_SMALL
from spos_hw.nas.spaces.shufflenetv2 import IMAGENET, PAPER_SCALES, SMALL, ShuffleNetV2Space

_REGISTRY: dict[str, Callable[[str], SearchSpace]] = {}


def register_space(name: str, builder: Callable[[str], SearchSpace]) -> None:
    """Register ``builder(name) -> SearchSpace``; a duplicate name is an error."""
    if name in _REGISTRY:
        raise SpaceError(f"space {name!r} is already registered")
    _REGISTRY[name] = builder


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


_OVERRIDES = {"classes": "num_classes", "channels": "channels", "size": "size"}


def get_space(spec: str) -> SearchSpace:
    """The space named ``spec`` (with optional ``:key=value`` overrides), or one read from a JSON file."""
    if spec.endswith(".json"):
        path = Path(spec)
        if not path.is_file():
            raise SpaceError(f"space file {spec!r} does not exist")
        try:
            return SearchSpace.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpaceError(f"space file {spec!r} is not valid JSON: {exc}") from None
    base, _, opts = spec.partition(":")
    if base not in _REGISTRY:
        raise SpaceError(f"unknown space {base!r}; known: {', '.join(list_spaces())}")
    space = _REGISTRY[base](base)
    if not opts:
        return space
    kw: dict[str, int] = {}
    for item in opts.split(","):
        key, eq, value = item.partition("=")
        if key not in _OVERRIDES or not eq or not value.isdigit() or int(value) < 1:
            raise SpaceError(f"bad space option {item!r}; use classes=N, channels=N or size=N (N >= 1)")
        kw[key] = int(value)
    c, h, w = space.input_shape
    changes = {
        "name": f"{base}:" + ",".join(f"{k}={kw[k]}" for k in sorted(kw)),
        "num_classes": kw.get("classes", space.num_classes),
        "input_shape": (kw.get("channels", c), kw.get("size", h), kw.get("size", w)),
    }
    import dataclasses

    return dataclasses.replace(space, **changes)


def space_from_record(spec: Any, fingerprint: str | None, where: str) -> SearchSpace:
    """The space an artifact was made for, rebuilt from its recorded spec (``SearchSpace.to_json()``)
    and checked against the fingerprint it recorded (importing this module registers the families)."""
    try:
        space = SearchSpace.from_json(spec)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ArtifactError(f"{where} has no usable space spec ({exc})") from None
    if space.fingerprint != fingerprint:
        raise ArtifactMismatch(
            f"{where} records space fingerprint {fingerprint} but its spec hashes to {space.fingerprint} "
            "(made by another spos-hw version?)"
        )
    return space


def read_arch(space: SearchSpace, spec: Any) -> Arch:
    """An architecture of ``space`` from any form a user gives: an ``Arch``, its canonical string,
    a JSON dict or text (``{"op": [...]}``), or a .json file (an arch, or a ``result.json`` /
    ``summary.json`` / ``info --json`` dump that holds one)."""
    if not isinstance(spec, str):
        return space.arch(spec)
    text = spec.strip()
    if text.endswith(".json") or Path(text).is_file():
        path = Path(text)
        if not path.is_file():
            raise ArchError(f"architecture file {text!r} does not exist")
        try:
            obj: Any = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchError(f"architecture file {text!r} is not valid JSON: {exc}") from None
    elif text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"architecture JSON is malformed: {exc}") from None
    else:
        return space.arch(text)
    if isinstance(obj, dict) and "arch" in obj:  # result.json, summary.json or an info --json dump
        obj = obj["arch_json"] if isinstance(obj.get("arch_json"), dict) else obj["arch"]
    if not isinstance(obj, (dict, str)):
        raise ArchError('architecture JSON must be an object like {"op": [...]} or a string')
    return space.arch(obj)


def _shufflenet(params: dict, **extra) -> Callable[[str], SearchSpace]:
    return lambda name: ShuffleNetV2Space(name=name, **params, **extra)


register_space("shufflenetv2-imagenet", _shufflenet(IMAGENET))
register_space("shufflenetv2-imagenet-ch", _shufflenet(IMAGENET, channel_scales=PAPER_SCALES))
register_space("shufflenetv2-small", _shufflenet(SMALL))
register_space("shufflenetv2-small-ch", _shufflenet(SMALL, channel_scales=PAPER_SCALES))

# Quantized spaces. Stem and head run at 8/8 bits (not searched); BitOps count them at 8 x 8.
# Two deploy profiles (docs/quantization.md): the plain names quantize post-ReLU activations on
# the unsigned grid [0, 2^b - 1] (the ORT profile: 8-bit ones export as UINT8, which ONNX Runtime
# runs and TensorRT refuses); the `-trt` twins put every activation on the signed grid, so each
# Q/DQ is INT8 and what trains is what TensorRT runs.
_DEPLOY_BITS = dict(wbits=(4, 8), abits=(8,), fixed_bits=(8, 8))
"""4- or 8-bit weights (both stored as exact INT8 integers), 8-bit activations."""
_TRT = dict(signed_activations=True)
register_space("shufflenetv2-small-w48a8", _shufflenet(SMALL, **_DEPLOY_BITS))
register_space("shufflenetv2-imagenet-w48a8", _shufflenet(IMAGENET, **_DEPLOY_BITS))
register_space("shufflenetv2-small-w48a8-trt", _shufflenet(SMALL, **_DEPLOY_BITS, **_TRT))
register_space("shufflenetv2-imagenet-w48a8-trt", _shufflenet(IMAGENET, **_DEPLOY_BITS, **_TRT))
register_space(
    "resnet18-mixed",
    lambda name: ResNetSpace(
        name=name, **RESNET_SMALL, channel_scales=(0.5, 0.75, 1.0), wbits=MIXED_BITS, abits=MIXED_BITS, fixed_bits=(8, 8)
    ),
)
register_space(  # 1-bit activations have no signed grid worth having (the sign is constant after ReLU)
    "resnet18-mixed-trt",
    lambda name: ResNetSpace(
        name=name,
        **RESNET_SMALL,
        channel_scales=(0.5, 0.75, 1.0),
        wbits=MIXED_BITS,
        abits=MIXED_BITS[1:],
        fixed_bits=(8, 8),
        signed_activations=True,
    ),
)


def _mbconv(params: dict, **extra) -> Callable[[str], SearchSpace]:
    return lambda name: MBConvSpace(name=name, **{**params, **extra})


# MobileNet-family spaces with skip choices (docs/spaces.md)
register_space("fbnet-imagenet", _mbconv(FBNET_IMAGENET))
register_space("fbnet-small", _mbconv(FBNET_SMALL))
register_space("fbnet-small-w48a8", _mbconv(FBNET_SMALL, **_DEPLOY_BITS))
register_space("fbnet-small-w48a8-trt", _mbconv(FBNET_SMALL, **_DEPLOY_BITS, **_TRT))
register_space("proxylessnas-imagenet", _mbconv(PROXYLESS_IMAGENET))
register_space("proxylessnas-gpu-imagenet", _mbconv(PROXYLESS_GPU_IMAGENET))
register_space("proxylessnas-small", _mbconv(PROXYLESS_SMALL))

__all__ = ["get_space", "list_spaces", "read_arch", "register_space", "space_from_record"]
