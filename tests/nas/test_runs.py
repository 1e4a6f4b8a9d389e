"""The training runs: resume, checkpoints that search and export load, retraining, DDP."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from spos_hw.errors import ArtifactMismatch, OutputError
from spos_hw.io import load_checkpoint
from spos_hw.nas.checkpoint import data_for_checkpoint, load_subnet, load_supernet
from spos_hw.nas.config import RetrainConfig, SupernetConfig
from spos_hw.nas.data import load_data
from spos_hw.nas.evaluation import evaluate
from spos_hw.nas.runs import _seeded_init, retrain, train_supernet
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet
from tests.support.checks import assert_states_equal
from tests.support.processes import subprocess_env

SPACE = "shufflenetv2-small:size=16"
SPACE_CH = "shufflenetv2-small-ch:size=16"
FAST = dict(data="digits", batch_size=16, threads=1, log_every=2)


def test_resume_keeps_the_recorded_recipe(tmp_path):
    """A run started under other recipe defaults (an older version) resumes with the lr and weight
    decay its checkpoint recorded when --lr / --weight-decay are left out; given ones are checked."""
    out = tmp_path / "s.pt"
    cfg = dict(space=SPACE, steps=4, ckpt_every=2, **FAST)
    train_supernet(SupernetConfig(out=str(out), lr=0.03, weight_decay=1e-4, **cfg), progress=False, stop_after=2)
    done = train_supernet(SupernetConfig(out=str(out), resume=True, **cfg), progress=False)
    assert done["finished"] and (done["config"]["lr"], done["config"]["weight_decay"]) == (0.03, 1e-4)
    with pytest.raises(ArtifactMismatch, match=r"lr=0\.03"):
        train_supernet(SupernetConfig(out=str(out), resume=True, lr=0.5, **cfg), progress=False)


def test_resume_is_bit_identical(tmp_path):
    cfg = dict(space=SPACE, steps=6, ckpt_every=2, constraints=(("flops", None, 1.5),), **FAST)
    full = train_supernet(SupernetConfig(out=str(tmp_path / "full.pt"), **cfg), progress=False)
    part = SupernetConfig(out=str(tmp_path / "part.pt"), **cfg)
    first = train_supernet(part, progress=False, stop_after=3)
    assert (first["step"], first["finished"]) == (3, False)
    assert load_checkpoint(tmp_path / "part.pt")["step"] == 3
    with pytest.raises(OutputError, match="already exists"):
        train_supernet(part, progress=False)
    again = train_supernet(SupernetConfig(out=str(tmp_path / "part.pt"), resume=True, **cfg), progress=False)
    assert again["finished"] and full["finished"]
    a, b = load_checkpoint(tmp_path / "full.pt"), load_checkpoint(tmp_path / "part.pt")
    assert_states_equal(a["model"], b["model"])
    assert a["sampler"] == b["sampler"] and a["step"] == b["step"] == 6
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert [(p["loss"], p["acc"]) for p in a["curve"]] == [(p["loss"], p["acc"]) for p in b["curve"]]
    # the summary and the curve plot sit beside the checkpoint
    summary = json.loads((tmp_path / "full.json").read_text())
    assert summary["kind"] == "supernet" and summary["data"]["holdout"]["size"] == 144 and (tmp_path / "full.png").is_file()


def test_resume_refuses_other_config_or_space(tmp_path):
    out = str(tmp_path / "s.pt")
    train_supernet(SupernetConfig(space=SPACE, out=out, steps=2, **FAST), progress=False)
    with pytest.raises(ArtifactMismatch, match=r"lr=.*\(now 0\.3\)"):
        train_supernet(SupernetConfig(space=SPACE, out=out, steps=2, lr=0.3, resume=True, **FAST), progress=False)
    with pytest.raises(ArtifactMismatch, match="was made for space"):
        train_supernet(SupernetConfig(space=SPACE_CH, out=out, steps=2, resume=True, **FAST), progress=False)
    # --resume with nothing to resume starts a new run
    fresh = train_supernet(
        SupernetConfig(space=SPACE, out=str(tmp_path / "new.pt"), steps=1, resume=True, **FAST), progress=False
    )
    assert fresh["finished"]


def test_supernet_checkpoint_loads_for_search(tmp_path):
    out = tmp_path / "s.pt"
    train_supernet(SupernetConfig(space=SPACE, out=str(out), steps=2, holdout=100, **FAST), progress=False)
    ckpt = torch.load(out, weights_only=True)  # plain tensors and values only
    for key in (
        "kind",
        "space",
        "fingerprint",
        "config",
        "model",
        "optimizer",
        "scheduler",
        "sampler",
        "step",
        "epoch",
        "position",
        "curve",
        "data",
        "versions",
    ):
        assert key in ckpt, key
    net, ckpt = load_supernet(out, get_space(SPACE))
    assert isinstance(net, Supernet) and ckpt["data"]["mean"] and ckpt["data"]["classes"][0] == "0"
    with pytest.raises(ArtifactMismatch, match="was made for space"):
        load_supernet(out, get_space("shufflenetv2-small"))
    data, split = data_for_checkpoint(ckpt, net.space)
    assert len(split.holdout) == 100
    np.testing.assert_array_equal(split.holdout, data.split(100, 0).holdout)


def test_retrain_reports_test_accuracy_and_exportable_checkpoint(tmp_path):
    space = get_space(SPACE)
    arch = ",".join(["0"] * space.num_blocks)
    out = tmp_path / "m.pt"
    r = retrain(
        RetrainConfig(space=SPACE, arch=arch, out=str(out), steps=60, lr=0.1, **(FAST | {"batch_size": 32})), progress=False
    )
    assert r["finished"] and r["test_images"] == 360 and 0.5 < r["test_accuracy"] <= 1.0  # chance is 0.1
    net, ckpt = load_subnet(out)
    assert ckpt["kind"] == "subnet" and ckpt["arch"] == arch and ckpt["classes"] == list("0123456789")
    assert ckpt["input"]["channels"] == 1 and ckpt["input"]["height"] == 16 and len(ckpt["input"]["mean"]) == 1
    data = load_data("digits", space)
    again = evaluate(net.eval(), data, data.test, np.arange(len(data.test)))
    assert again["accuracy"] == pytest.approx(r["test_accuracy"])


WORKER = """
import sys, torch
from spos_hw.nas import config as C, runs as R, trainer as T

out, steps = sys.argv[1], int(sys.argv[2])
seen = {}
orig_arch, orig_run = T.SupernetPolicy.arch, T.Trainer.run
def arch(self, dist):
    seen["row"] = orig_arch(self, dist)
    return seen["row"]
def run(self, until, **kw):
    orig_run(self, until, **kw)
    on_path = {id(p) for p in self.model.path_parameters(seen["row"])}
    none_ok = all((p.grad is None) == (id(p) not in on_path) for p in self.model.parameters())
    rank = torch.distributed.get_rank()
    torch.save({"model": self.model.state_dict(), "grads_none_off_path": none_ok,
                "buffers": {k: v.clone() for k, v in self.model.state_dict().items() if "running" in k}}, f"{out}/rank{rank}.pt")
T.SupernetPolicy.arch, T.Trainer.run = arch, run
R.train_supernet(C.SupernetConfig(space=sys.argv[3], data="digits", steps=steps, batch_size=32, threads=1, lr=0.1,
                                  out=f"{out}/ddp.pt", ckpt_every=steps), progress=False)
"""


@pytest.mark.slow
def test_ddp_gloo_two_ranks_match_single_process(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    steps = 4
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(worker),
        str(tmp_path),
        str(steps),
        SPACE,
    ]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["grads_none_off_path"] and r1["grads_none_off_path"]  # DDP leaves globally unused grads None
    assert_states_equal(r0["model"], r1["model"])  # replicas identical, BN statistics included (averaged)
    ddp = load_checkpoint(tmp_path / "ddp.pt")
    assert ddp["chunks"] == 2
    single = SupernetConfig(
        space=SPACE,
        data="digits",
        steps=steps,
        batch_size=32,
        threads=1,
        lr=0.1,
        accum=2,
        out=str(tmp_path / "single.pt"),
        ckpt_every=steps,
    )
    train_supernet(single, progress=False)
    one = load_checkpoint(tmp_path / "single.pt")
    assert one["sampler"] == ddp["sampler"]
    params = {n for n, _ in Supernet(get_space(SPACE)).named_parameters()}
    for name in params:
        torch.testing.assert_close(ddp["model"][name], one["model"][name], rtol=1e-4, atol=1e-5)
    init = _seeded_init(lambda: Supernet(get_space(SPACE)), 0).state_dict()
    assert sum(not torch.equal(ddp["model"][n], init[n]) for n in params) > 10  # training happened


def test_retrain_from_the_supernet_starts_where_search_scored(tmp_path):
    """--init supernet: the subnet inherits the supernet's weights with its BN recalibrated as the
    search's scorer does, so it computes what the scorer scored; fine-tuning then starts better."""
    from spos_hw.nas.data import recalibration_batches
    from spos_hw.nas.recalibrate import ScoringData, SupernetScorer, recalibrated_subnet

    sup = tmp_path / "s.pt"
    train_supernet(SupernetConfig(space=SPACE, out=str(sup), steps=40, lr=0.1, **FAST), progress=False)
    net, _ = load_supernet(sup)
    data = load_data("digits", net.space)
    split = data.split(0, 0)
    batches = recalibration_batches(data, split, 2, 64, 0)
    arch = net.space.random_arch(np.random.default_rng(5))
    sub = recalibrated_subnet(net, arch, batches).eval()
    x = data.prepare(data.test.fetch(np.arange(32)))
    net2, _ = load_supernet(sup)
    scorer = SupernetScorer(
        net2, ScoringData.build(batches, [(x, torch.zeros(32, dtype=torch.long))], channels_last=False), channels_last=False
    )
    scorer.recalibrate(arch.to_array())
    with torch.no_grad():
        torch.testing.assert_close(sub(x), scorer.net(x, arch.to_array()), rtol=1e-5, atol=1e-5)

    common = dict(
        space=SPACE, arch=str(arch), steps=4, lr=0.05, log_every=1, **{k: v for k, v in FAST.items() if k != "log_every"}
    )
    tuned = retrain(RetrainConfig(out=str(tmp_path / "t.pt"), init="supernet", supernet=str(sup), **common), progress=False)
    scratch = retrain(RetrainConfig(out=str(tmp_path / "r.pt"), **common), progress=False)
    first = lambda p: load_checkpoint(p)["curve"][0]["loss"]  # noqa: E731
    assert first(tmp_path / "t.pt") < first(tmp_path / "r.pt")  # inherited weights beat a random init on step 1
    assert tuned["test_accuracy"] is not None and load_checkpoint(tmp_path / "t.pt")["inherited"]["supernet"] == str(sup)
    assert scratch["config"]["init"] == "scratch"


def test_mbconv_supernet_trains_and_retrains(tmp_path):
    """A short fbnet-small run (skips included) writes a loadable supernet; a sampled arch retrains."""
    space_name = "fbnet-small:size=16"
    space = get_space(space_name)
    out = tmp_path / "sn.pt"
    train_supernet(SupernetConfig(space=space_name, out=str(out), steps=4, holdout=100, **FAST), progress=False)
    loaded, _ = load_supernet(out, space)
    assert isinstance(loaded, Supernet)
    arch = space.random_arch(np.random.default_rng(1))
    res = retrain(RetrainConfig(space=space_name, arch=str(arch), out=str(tmp_path / "m.pt"), steps=3, **FAST), progress=False)
    assert res["finished"] and 0.0 <= res["test_accuracy"] <= 1.0
