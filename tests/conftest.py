"""Fixtures every test folder may use; helpers live in ``tests/support``."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from tests.support.cli import invoke


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "trt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs the tensorrt package and a CUDA device"))


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests may seed freely; the global RNG state is put back afterwards."""
    py, npy, th = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(py)
    np.random.set_state(npy)
    torch.set_rng_state(th)


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*args)``: ``spos-hw ARGS`` in-process through the real entry point -> ``CliResult``."""
    return lambda *args: invoke(capsys, *args)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Shared tiny artifacts (``tests.support.artifacts``): supernet, subnet, tables, a search."""
    from tests.support.artifacts import build_artifacts

    return build_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="session")
def tiny():
    from tests.support.spaces import make_tiny

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
    from tests.support.spaces import FAST

    path = tmp_path_factory.mktemp("lut") / "lut.json"
    profile_space(tiny, runtime="onnxruntime", calibrate=2, protocol=FAST, out=path)
    return path


@pytest.fixture(scope="session")
def tiny10():
    """The tiny space with 10 classes, so digits fits it."""
    import dataclasses

    from tests.support.spaces import make_tiny

    return dataclasses.replace(make_tiny("tiny10"), num_classes=10)


@pytest.fixture(scope="session")
def tinyq():
    """The tiny space with 2/4/8-bit weights and 4/8-bit activations."""
    from tests.support.spaces import make_tiny_q

    return make_tiny_q()


@pytest.fixture(scope="session")
def tiny_mbconv():
    """A 192-architecture mbconv space with skips at some blocks only (``make_tiny_mbconv``)."""
    from tests.support.spaces import make_tiny_mbconv

    return make_tiny_mbconv()
