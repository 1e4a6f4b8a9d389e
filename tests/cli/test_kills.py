"""kill -9 at a seeded random point, then resume: ``train-supernet`` and ``retrain`` (profile and
search have theirs in tests/cli/test_latency.py and tests/cli/test_search.py), all on the same
``tests.support.processes.kill_during``."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from spos_hw.io import load_checkpoint
from spos_hw.latency.table import LatencyTable
from spos_hw.nas.config import RetrainConfig, SupernetConfig
from spos_hw.nas.runs import retrain, train_supernet
from tests.support.artifacts import SPACE
from tests.support.checks import assert_states_equal
from tests.support.processes import checkpoint_step, kill_during, subprocess_env

ARCH = "0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3,0,1,2,3"
SPACE16 = "shufflenetv2-small:size=16"


@pytest.mark.slow
def test_retrain_sigkill_then_resume_is_bit_identical(tmp_path):
    steps = 80  # enough that the kill, at most 0.35 s after step 2..10, lands before the last step even on a fast machine
    cfg = dict(space=SPACE, arch=ARCH, data="digits", steps=steps, batch_size=16, threads=1, ckpt_every=2, log_every=3)
    args = [
        ARCH,
        "--space",
        SPACE,
        "--data",
        "digits",
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--ckpt-every",
        "2",
        "--log-every",
        "3",
    ]
    out = tmp_path / "killed.pt"
    at = int(np.random.default_rng(8).integers(2, 10))  # a seeded random kill point
    kill_during(
        [sys.executable, "-m", "spos_hw", "retrain", *args, "--out", str(out), "--json"],
        lambda: checkpoint_step(out) >= at,
        rng=np.random.default_rng(at),
        env=subprocess_env(),
    )
    killed = load_checkpoint(out)
    assert at <= killed["step"] < steps and killed["test_accuracy"] is None
    resumed = retrain(RetrainConfig(out=str(out), resume=True, **cfg), progress=False)
    full = retrain(RetrainConfig(out=str(tmp_path / "full.pt"), **cfg), progress=False)
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "full.pt")
    assert_states_equal(a["model"], b["model"])
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert np.array_equal(sa["momentum_buffer"].numpy(), sb["momentum_buffer"].numpy())
    assert a["step"] == b["step"] == steps
    assert [(p["step"], p["loss"], p["acc"]) for p in a["curve"]] == [(p["step"], p["loss"], p["acc"]) for p in b["curve"]]
    assert resumed["test_accuracy"] == full["test_accuracy"] is not None


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    args = [
        "--space",
        SPACE16,
        "--data",
        "digits",
        "--steps",
        "40",
        "--batch-size",
        "16",
        "--threads",
        "1",
        "--ckpt-every",
        "2",
        "--log-every",
        "5",
    ]
    out = tmp_path / "killed.pt"
    at = int(np.random.default_rng(8).integers(4, 24))  # a seeded random kill point
    kill_during(
        [sys.executable, "-m", "spos_hw", "train-supernet", *args, "--out", str(out), "--json"],
        lambda: checkpoint_step(out) >= at,
        rng=np.random.default_rng(at),
        env=subprocess_env(),
    )
    killed_at = load_checkpoint(out)["step"]
    assert 4 <= killed_at < 40
    cfg = dict(space=SPACE16, data="digits", steps=40, batch_size=16, threads=1, ckpt_every=2, log_every=5)
    train_supernet(SupernetConfig(out=str(out), resume=True, **cfg), progress=False)
    train_supernet(SupernetConfig(out=str(tmp_path / "full.pt"), **cfg), progress=False)
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "full.pt")
    assert_states_equal(a["model"], b["model"])
    assert a["sampler"] == b["sampler"]


@pytest.mark.slow
def test_sigkill_then_resume_from_the_cli(tiny_file, tmp_path):
    """A real kill -9 of `spos-hw profile`, then `--resume`: the finished turns survive."""
    import subprocess
    import sys

    out = tmp_path / "lut.json"
    args = [
        sys.executable,
        "-m",
        "spos_hw",
        "profile",
        "--space",
        str(tiny_file),
        "--runtime",
        "torch",
        "--calibrate",
        "2",
        "--rounds",
        "150",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--out",
        str(out),
        "--json",
    ]
    at = int(np.random.default_rng(8).integers(10, 60))  # a seeded random number of finished turns
    kept = 0

    def ready() -> bool:
        nonlocal kept
        if out.exists():
            partial = json.loads(out.read_text())  # always whole: writes are atomic
            kept = sum(len(v) for v in (partial.get("samples") or {}).values())
        return kept >= at

    kill_during(args, ready, rng=np.random.default_rng(at), timeout=120)
    partial = LatencyTable.load(out, allow_partial=True)
    assert sum(len(v) for v in partial.samples.values()) >= kept >= at
    res = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    table = LatencyTable.load(out)
    assert table.complete and all(s["n"] == 150 * 3 for s in table.entries.values())


@pytest.mark.slow
def test_rank_check_sigkill_then_resume_matches_uninterrupted(tmp_path):
    """Every stand-alone retrain is a unit: a kill loses at most the one in progress, which resumes."""
    import spos_hw

    sup = tmp_path / "s.pt"
    spos_hw.train_supernet(
        space=SPACE, data="digits", steps=2, batch_size=16, holdout=0.2, threads=1, out=str(sup), progress=False
    )
    flags = [
        "--archs",
        "4",
        "--repeated",
        "2",
        "--steps",
        "30",
        "--batch-size",
        "16",
        "--recal-images",
        "32",
        "--holdout",
        "40",
        "--threads",
        "1",
        "--no-progress",
    ]
    killed = tmp_path / "killed"
    at = int(np.random.default_rng(3).integers(1, 4))  # finished units before the kill
    ledger = killed / "retrains.json"
    kill_during(
        [sys.executable, "-m", "spos_hw", "rank-check", str(sup), *flags, "--out", str(killed)],
        lambda: ledger.is_file() and len(json.loads(ledger.read_text())) >= at,
        rng=np.random.default_rng(at),
        env=subprocess_env(),
        max_delay=0.5,
    )
    done_before = json.loads(ledger.read_text())
    assert at <= len(done_before) < 6
    resumed = spos_hw.rank_check(
        supernet=str(sup),
        out=str(killed),
        resume=True,
        progress=False,
        archs=4,
        repeated=2,
        steps=30,
        batch_size=16,
        recal_images=32,
        holdout=40,
        threads=1,
    )
    assert {k: v["test_accuracy"] for k, v in done_before.items()} == {
        k: v["test_accuracy"] for k, v in json.loads(ledger.read_text()).items() if k in done_before
    }  # finished units were kept, not redone
    full = spos_hw.rank_check(
        supernet=str(sup),
        out=str(tmp_path / "full"),
        progress=False,
        archs=4,
        repeated=2,
        steps=30,
        batch_size=16,
        recal_images=32,
        holdout=40,
        threads=1,
    )
    assert resumed["table"] == full["table"] and resumed["noise_ceiling"] == full["noise_ceiling"]
