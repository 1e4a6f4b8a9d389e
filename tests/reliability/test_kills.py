"""kill -9 at a seeded random point, then resume, for the command that had no such test:
``retrain``. (profile, train-supernet and search have theirs beside their code, in
tests/latency/test_profile.py, tests/nas/test_train.py and tests/nas/test_search_cli.py, on the
same ``tests.conftest.kill_during``.)"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from spos_hw.io import load_checkpoint
from spos_hw.nas.train import RetrainConfig, retrain
from tests.conftest import kill_during
from tests.nas.test_train import _env, _states_equal, _step
from tests.reliability.conftest import SPACE

ARCH = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"


@pytest.mark.slow
def test_retrain_sigkill_then_resume_is_bit_identical(tmp_path):
    steps = 16
    cfg = dict(space=SPACE, arch=ARCH, data="digits", steps=steps, batch_size=16, threads=1, ckpt_every=2, log_every=3)
    args = [ARCH, "--space", SPACE, "--data", "digits", "--steps", str(steps), "--batch-size", "16", "--threads", "1",
            "--ckpt-every", "2", "--log-every", "3"]  # fmt: skip
    out = tmp_path / "killed.pt"
    at = int(np.random.default_rng(8).integers(2, 10))  # a seeded random kill point
    kill_during([sys.executable, "-m", "spos_hw", "retrain", *args, "--out", str(out), "--json"],
                lambda: _step(out) >= at, rng=np.random.default_rng(at), env=_env())  # fmt: skip
    killed = load_checkpoint(out)
    assert at <= killed["step"] < steps and killed["test_accuracy"] is None
    resumed = retrain(RetrainConfig(out=str(out), resume=True, **cfg), progress=False)
    full = retrain(RetrainConfig(out=str(tmp_path / "full.pt"), **cfg), progress=False)
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "full.pt")
    _states_equal(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert np.array_equal(sa["momentum_buffer"].numpy(), sb["momentum_buffer"].numpy())
    assert a["step"] == b["step"] == steps
    assert [(p["step"], p["loss"], p["acc"]) for p in a["curve"]] == [(p["step"], p["loss"], p["acc"]) for p in b["curve"]]
    assert resumed["test_accuracy"] == full["test_accuracy"] is not None
