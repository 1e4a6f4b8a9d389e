"""Artifacts written by an earlier spos-hw (``tests/expect/legacy``, see its README) still load,
compute what that version computed, and resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import spos_hw
from spos_hw.errors import ArtifactMismatch
from spos_hw.latency.predictor import load_predictor
from spos_hw.nas.checkpoint import load_subnet, load_supernet
from spos_hw.nas.search import report_search

LEGACY = Path(__file__).parent / "expect" / "legacy"
EXPECT = json.loads((LEGACY / "expect.json").read_text())


def _input(space):
    return torch.randn(3, *space.input_shape, generator=torch.Generator().manual_seed(EXPECT["input_seed"]))


def test_supernet_checkpoint_loads_and_computes_the_same():
    net, ckpt = load_supernet(LEGACY / "supernet.pt")
    net.eval()
    x = _input(net.space)
    with torch.no_grad():
        for arch, logits in zip(EXPECT["archs"], EXPECT["supernet_logits"], strict=True):
            torch.testing.assert_close(net(x, net.space.arch(arch)), torch.tensor(logits), rtol=1e-5, atol=1e-6)
    assert ckpt["kind"] == "supernet" and ckpt["step"] == 6


def test_subnet_checkpoint_loads_and_computes_the_same():
    sub, _ = load_subnet(LEGACY / "model.pt")
    assert str(sub.arch) == EXPECT["subnet_arch"]
    with torch.no_grad():
        torch.testing.assert_close(sub.eval()(_input(sub.space)), torch.tensor(EXPECT["subnet_logits"]), rtol=1e-5, atol=1e-6)


def test_latency_table_loads_and_predicts_the_same():
    net, _ = load_supernet(LEGACY / "supernet.pt")
    space = net.space
    pred = load_predictor(LEGACY / "lut.json", space)
    got = pred.cost(space.encode(space.arch(a) for a in EXPECT["archs"]))
    np.testing.assert_array_equal(got, np.array(EXPECT["predicted_ms"]))


def test_search_folder_reports_the_same():
    rep = report_search(
        LEGACY / "search",
        {"latency": 0.0345, "flops": 100},
        cost_models=lambda space: spos_hw.cost_models(space, LEGACY / "lut.json"),
    )
    want = EXPECT["report"]
    for key in ("arch", "accuracy", "flops", "params", "latency_ms", "budgets", "candidates", "search_budgets"):
        assert rep[key] == want[key], key


@pytest.fixture
def legacy_copy(tmp_path):
    """The legacy folder in a scratch place (resuming writes beside the files)."""
    for name in ("supernet.pt", "model.pt", "lut.json", "tiny.json"):
        shutil.copy(LEGACY / name, tmp_path / name)
    shutil.copytree(LEGACY / "search", tmp_path / "search")
    return tmp_path


def test_legacy_search_state_loads_and_a_changed_scoring_rule_is_named(legacy_copy):
    """The state loads; resuming it is refused because held-out subsets are now stratified (the
    earlier version scored the first 60 held-out images), and the refusal says so."""
    from spos_hw.errors import ArtifactMismatch
    from spos_hw.nas.search import load_state

    d = legacy_copy
    state = load_state(d / "search" / "state.json", {}, partial=True)
    assert state["strategy"]["generation"] == 2 and len(state["strategy"]["history"]) == 8
    with pytest.raises(ArtifactMismatch, match="holdout_subset"):
        spos_hw.search(
            supernet=str(d / "supernet.pt"),
            budgets={"latency": 0.03574143267241537, "flops": 100},
            lut=str(d / "lut.json"),
            population=4,
            generations=2,
            recal_images=64,
            holdout=60,
            out=str(d / "search"),
            resume=True,
            threads=1,
            progress=False,
        )


def test_finished_legacy_training_resumes_without_training_again(legacy_copy, monkeypatch):
    monkeypatch.chdir(legacy_copy)  # the runs recorded relative paths (see the README)
    old = dict(
        space="tiny.json",
        data="digits",
        steps=6,
        batch_size=32,
        ckpt_every=3,
        constraints=(("latency", None, None),),
        lut="lut.json",
        threads=1,
        out="supernet.pt",
        resume=True,
        progress=False,
    )
    with pytest.raises(ArtifactMismatch, match="sharing='independent'"):  # it predates weight sharing modes: independent
        spos_hw.train_supernet(**old)
    res = spos_hw.train_supernet(**old, sharing="independent")
    assert res["finished"] and res["step"] == 6
    again = spos_hw.retrain(
        arch=EXPECT["subnet_arch"],
        space="tiny.json",
        data="digits",
        steps=4,
        batch_size=32,
        out="model.pt",
        resume=True,
        progress=False,
    )
    assert again["finished"] and again["test_accuracy"] is not None
