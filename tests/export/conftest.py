"""Tiny float and quantized spaces, and subnet checkpoints written like `spos-hw retrain` writes them."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from spos_hw.io import save_checkpoint
from spos_hw.nas.checkpoint import FORMAT
from spos_hw.nas.supernet import SubNet
from tests.latency.conftest import make_tiny


def make_tiny_q(name: str = "tinyq"):
    """The tiny space with 2/4/8-bit weights and 4/8-bit activations (stem and head at 8/8)."""
    return dataclasses.replace(make_tiny(name), wbits=(2, 4, 8), abits=(4, 8), fixed_bits=(8, 8))


@pytest.fixture(scope="session")
def tiny10():
    """The tiny space with 10 classes, so digits fits it."""
    return dataclasses.replace(make_tiny("tiny10"), num_classes=10)


@pytest.fixture(scope="session")
def tinyq():
    return make_tiny_q()


def space_file(tmp_path, space):
    path = tmp_path / f"{space.name}.json"
    path.write_text(json.dumps(space.to_json()))
    return path


def write_checkpoint(path, space, arch, *, dataset="digits", seed=0):
    """A subnet checkpoint with the keys `retrain` writes (random weights, BN statistics from a batch)."""
    torch.manual_seed(seed)
    net = SubNet(space, arch)
    with torch.no_grad():
        net.train()(torch.randn(32, *space.input_shape))  # BN statistics and quantizer step sizes
    c, h, w = space.input_shape
    mean, std = [0.25] * c, [0.5] * c
    classes = [f"class{i}" for i in range(space.num_classes)]
    save_checkpoint(path, {
        "kind": "subnet", "format": FORMAT, "space": space.to_json(), "space_name": space.name,
        "fingerprint": space.fingerprint, "model": net.state_dict(), "arch": str(arch), "arch_json": arch.to_json(),
        "input": {"channels": c, "height": h, "width": w, "mean": mean, "std": std}, "classes": classes,
        "data": {"dataset": dataset, "classes": classes, "mean": mean, "std": std}, "test_accuracy": 0.5,
    })  # fmt: skip
    return path
