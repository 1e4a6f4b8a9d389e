"""Tiny spaces (fast to build, profile and train) and a quick timing protocol."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np

from spos_hw.nas.space import Stage
from spos_hw.nas.spaces.mbconv import MBConvSpace
from spos_hw.nas.spaces.shufflenetv2 import ShuffleNetV2Space
from spos_hw.protocol import Protocol

FAST = Protocol(warmup=1, rounds=2, repeats=2, turn_warmup=0, turn_warmup_ms=0.0)


def make_tiny(name: str = "tiny", size: int = 16) -> ShuffleNetV2Space:
    """3 blocks, 2 ops x 2 channel scales; blocks 1 and 2 identical."""
    return ShuffleNetV2Space(
        name=name,
        input_shape=(1, size, size),
        num_classes=4,
        ops=("shuffle3x3", "xception"),
        channel_scales=(0.5, 1.0),
        stem_channels=8,
        stages=(Stage(3, 16, 2),),
        head_channels=32,
    )


def make_tiny_q(name: str = "tinyq"):
    """The tiny space with 2/4/8-bit weights and 4/8-bit activations (stem and head at 8/8)."""
    return dataclasses.replace(make_tiny(name), wbits=(2, 4, 8), abits=(4, 8), fixed_bits=(8, 8))


def make_tiny_mbconv(name: str = "tinymb") -> MBConvSpace:
    """4 blocks, 4 candidates; skip only at blocks 0, 1 and 3: 4 * 4 * 3 * 4 = 192 architectures."""
    return MBConvSpace(
        name=name,
        input_shape=(1, 8, 8),
        num_classes=4,
        ops=("k3_e1", "k3_e3", "k5_e3", "skip"),
        stem_channels=4,
        stem_stride=1,
        stages=(Stage(2, 4, 1), Stage(2, 8)),
        head_channels=8,
    )


def all_op_archs(space) -> np.ndarray:
    """Every architecture of an op-only space, as an ``ArchBatch`` (allowed choices only)."""
    rows = [list(itertools.compress(range(len(space.ops)), space.choice_mask()[p.index, :, 0, 0, 0])) for p in space.positions]
    allb = np.array(list(itertools.product(*rows)))
    batch = np.zeros((len(allb), space.num_blocks, 4), dtype=np.int64)
    batch[..., 0] = allb
    return batch


def space_file(tmp_path, space):
    """``space`` as a .json spec file (what ``--space FILE`` reads)."""
    path = tmp_path / f"{space.name}.json"
    path.write_text(json.dumps(space.to_json()))
    return path
