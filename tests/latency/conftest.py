"""A tiny space (3 blocks, 2 ops x 2 channel scales; blocks 1 and 2 identical) and one ORT table
profiled once per session, so the latency tests stay fast."""

from __future__ import annotations

import json

import pytest

from spos_hw.latency.protocol import Protocol
from spos_hw.nas.space import Stage
from spos_hw.nas.spaces.shufflenetv2 import ShuffleNetV2Space

FAST = Protocol(warmup=1, rounds=2, repeats=2, turn_warmup=0)


def make_tiny(name: str = "tiny", size: int = 16) -> ShuffleNetV2Space:
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


@pytest.fixture(scope="session")
def tiny():
    return make_tiny()


@pytest.fixture(scope="session")
def tiny_file(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    path.write_text(json.dumps(tiny.to_json()))
    return path


@pytest.fixture(scope="session")
def ort_lut(tmp_path_factory, tiny):
    """A complete ONNX Runtime table of the tiny space (2 calibration subnets)."""
    from spos_hw.latency.profile import profile_space

    path = tmp_path_factory.mktemp("lut") / "lut.json"
    profile_space(tiny, runtime="onnxruntime", calibrate=2, protocol=FAST, out=path)
    return path
