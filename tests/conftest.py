"""Shared fixtures: RNG isolation, hardware marks, and an in-process CLI runner."""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch


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


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys):
    """Run ``spos-hw ARGS`` in-process through the real entry point (error handling included)."""
    from spos_hw.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = exc.value.code
        return CliResult(0 if code is None else int(code), out, err)

    return run


def assert_user_error(res: CliResult, *needles: str) -> None:
    """Exit 2, exactly one line on stderr, no traceback, mentioning every needle."""
    assert res.code == 2, (res.code, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])
