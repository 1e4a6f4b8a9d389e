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


def kill_during(cmd: list[str], ready, *, rng, env: dict | None = None, timeout: float = 240.0, max_delay: float = 0.3) -> None:
    """Run ``cmd``, and ``kill -9`` it at a seeded random point: once ``ready()`` holds (callers
    pick its threshold with ``rng``), after a further random delay of up to ``max_delay`` s, so
    the kill lands anywhere in the work that follows, checkpoint writes included. Fails if the
    process ended on its own first (it could not be killed mid-run)."""
    import signal
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, "timed out waiting for the point to kill at"
                time.sleep(0.05)
            time.sleep(float(rng.uniform(0.0, max_delay)))
            if proc.poll() is not None:
                err.seek(0)
                raise AssertionError(f"the run ended before it could be killed: {err.read().decode()[-800:]}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
