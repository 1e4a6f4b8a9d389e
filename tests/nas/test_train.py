"""Supernet training and retraining: frozen unsampled paths, resume, checkpoints, CLI, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spos_hw.errors import ArtifactMismatch, ConfigError, OutputError
from spos_hw.io import load_checkpoint
from spos_hw.nas.checkpoint import load_subnet, load_supernet
from spos_hw.nas.data import BatchOrder, load_data
from spos_hw.nas.distributed import Dist
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import SubNet, Supernet
from spos_hw.nas.train import (
    RetrainConfig,
    SupernetConfig,
    Trainer,
    TrainConfig,
    _seeded_init,
    data_for_checkpoint,
    evaluate,
    param_groups,
    resolve,
    retrain,
    train_supernet,
)
from tests.conftest import assert_user_error, kill_during

SPACE = "shufflenetv2-small:size=16"
SPACE_CH = "shufflenetv2-small-ch:size=16"
REPO = Path(__file__).resolve().parents[2]
FAST = dict(data="digits", batch_size=16, threads=1, log_every=2)


class Sequence_:
    """A sampler replaying fixed rows (tests choose the paths)."""

    def __init__(self, rows):
        self.rows, self.i = list(rows), 0

    def sample(self, n=1):
        row = self.rows[self.i % len(self.rows)]
        self.i += 1
        return row[None]


@pytest.fixture(scope="module")
def digits16():
    return load_data("digits", get_space(SPACE))


def _trainer(space_name, data, rows, **cfg):
    space = get_space(space_name)
    torch.manual_seed(0)
    net = Supernet(space)
    config = resolve(TrainConfig(space=space_name, data="digits", out="-", steps=100, batch_size=16, lr=0.5, weight_decay=1e-3, **cfg), len(data.train))
    order = BatchOrder(np.arange(len(data.train)), 16, 0)
    return Trainer(net, data=data, order=order, config=config, dist=Dist(), sampler=Sequence_(rows)), net


def _snapshot(net, opt):
    params = {n: p.detach().clone() for n, p in net.named_parameters()}
    bufs = {n: opt.state[p]["momentum_buffer"].clone() for n, p in net.named_parameters() if p in opt.state}
    return params, bufs


def test_unsampled_paths_get_no_update_not_even_momentum(digits16):
    space = get_space(SPACE)
    a = np.zeros((space.num_blocks, 4), dtype=np.int64)  # every block op 0
    b = a.copy()
    b[:, 0] = 1  # every block op 1
    tr, net = _trainer(SPACE, digits16, [a, b])
    init, _ = _snapshot(net, tr.opt)
    tr.train_step()  # path a
    after_a, bufs_a = _snapshot(net, tr.opt)
    tr.train_step()  # path b: op-0 parameters have momentum and weight decay, yet must not move
    after_b, bufs_b = _snapshot(net, tr.opt)
    for name, p in after_b.items():
        op = int(name.split(".")[2]) if name.startswith("blocks.") else None
        if op == 0:
            assert torch.equal(p, after_a[name]) and torch.equal(bufs_b[name], bufs_a[name]), name
            assert net.get_parameter(name).grad is None
        elif op in (2, 3):
            assert torch.equal(p, init[name]) and name not in bufs_b, name  # never sampled: never touched
        else:
            assert not torch.equal(p, after_a[name]), name  # op 1, stem and head moved


def test_unused_channel_slices_stay_put(digits16):
    space = get_space(SPACE_CH)
    narrow = np.zeros((space.num_blocks, 4), dtype=np.int64)  # op 0, channel scale 0.2
    tr, net = _trainer(SPACE_CH, digits16, [narrow])
    conv = net.blocks[5][0].main[0].conv  # 1x1 conv whose output width follows the mid choice
    mid = space.mid_choices(space.positions[5])[0]
    before = conv.weight.detach().clone()
    tr.train_step()
    tr.train_step()
    w, buf = conv.weight.detach(), tr.opt.state[conv.weight]["momentum_buffer"]
    assert not torch.equal(w[:mid], before[:mid])
    assert torch.equal(w[mid:], before[mid:]) and buf[mid:].abs().max() == 0
    assert tr.opt.state[conv.weight]["momentum_buffer"][:mid].abs().max() > 0


def test_step_sizes_stay_positive_after_each_step(digits16):
    space = get_space("resnet18-mixed:size=16")
    row = space.sample(np.random.default_rng(0), 1)[0]
    tr, net = _trainer("resnet18-mixed:size=16", digits16, [row])

    def overshoot(opt, args, kwargs):  # as if the SGD step pushed every step size below zero
        with torch.no_grad():
            for name, p in net.named_parameters():
                if name.endswith(".scale"):
                    p.fill_(-0.5)

    tr.opt.register_step_post_hook(overshoot)
    tr.train_step()
    scales = [p for name, p in net.named_parameters() if name.endswith(".scale")]
    assert scales and all(bool((p >= 1e-8).all()) for p in scales)
    net.eval()(torch.zeros(2, *space.input_shape), row)  # an evaluation forward accepts them


def test_weight_decay_only_on_kernels():
    space = get_space(SPACE)
    sub = SubNet(space, space.arch([0] * space.num_blocks))
    decay, rest = param_groups(sub, 4e-5)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in rest["params"])
    assert rest["weight_decay"] == 0 and len(rest["params"]) > 0  # BN affine terms


def test_quantizer_step_sizes_get_their_own_lr_and_no_decay():
    from spos_hw.nas.train import STEP_LR_SCALE

    space = get_space("resnet18-mixed")
    sub = SubNet(space, space.decode(space.sample(np.random.default_rng(0), 1))[0])
    groups = param_groups(sub, 4e-5, 0.1)
    assert len(groups) == 3
    step = groups[2]
    names = {id(p): n for n, p in sub.named_parameters()}
    assert step["params"] and all(names[id(p)].endswith(".scale") for p in step["params"])
    assert step["lr"] == pytest.approx(0.1 * STEP_LR_SCALE) and step["weight_decay"] == 0.0
    assert not any(names[id(p)].endswith(".scale") for g in groups[:2] for p in g["params"])


def test_config_validation():
    with pytest.raises(ConfigError, match="steps or epochs"):
        SupernetConfig(space=SPACE, data="digits", steps=3, epochs=1.0)
    with pytest.raises(ConfigError, match="resume or --overwrite"):
        SupernetConfig(space=SPACE, data="digits", resume=True, overwrite=True)
    cfg = resolve(SupernetConfig(space=SPACE, data="fashion-mnist", batch_size=512), 54_000)
    assert cfg.lr == pytest.approx(0.4) and cfg.steps == 10 * (54_000 // 512) and cfg.weight_decay > 0
    assert cfg.augment is False and resolve(SupernetConfig(space=SPACE, data="digits"), 1000).augment is True


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


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
    _states_equal(a["model"], b["model"])
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
    fresh = train_supernet(SupernetConfig(space=SPACE, out=str(tmp_path / "new.pt"), steps=1, resume=True, **FAST), progress=False)
    assert fresh["finished"]


def test_supernet_checkpoint_loads_for_search(tmp_path):
    out = tmp_path / "s.pt"
    train_supernet(SupernetConfig(space=SPACE, out=str(out), steps=2, holdout=100, **FAST), progress=False)
    ckpt = torch.load(out, weights_only=True)  # plain tensors and values only
    for key in ("kind", "space", "fingerprint", "config", "model", "optimizer", "scheduler", "sampler", "step",
                "epoch", "position", "curve", "data", "versions"):  # fmt: skip
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
    r = retrain(RetrainConfig(space=SPACE, arch=arch, out=str(out), steps=60, lr=0.1, **(FAST | {"batch_size": 32})), progress=False)
    assert r["finished"] and r["test_images"] == 360 and 0.5 < r["test_accuracy"] <= 1.0  # chance is 0.1
    net, ckpt = load_subnet(out)
    assert ckpt["kind"] == "subnet" and ckpt["arch"] == arch and ckpt["classes"] == list("0123456789")
    assert ckpt["input"]["channels"] == 1 and ckpt["input"]["height"] == 16 and len(ckpt["input"]["mean"]) == 1
    data = load_data("digits", space)
    again = evaluate(net.eval(), data, data.test, np.arange(len(data.test)))
    assert again["accuracy"] == pytest.approx(r["test_accuracy"])


def test_cli_train_supernet_and_errors(run_cli, tmp_path):
    out = tmp_path / "s.pt"
    res = run_cli("train-supernet", "--space", SPACE, "--data", "digits", "--steps", "2", "--batch-size", "16",
                  "--threads", "1", "--constraint", "flops", "--range", "1.2:1.6", "--out", out, "--json")  # fmt: skip
    assert res.code == 0, res.err
    r = json.loads(res.out)
    assert r["step"] == 2 and r["sampling"]["method"] == "exact" and out.is_file()
    base = ("train-supernet", "--space", SPACE, "--data", "digits", "--steps", "1", "--out", tmp_path / "x.pt")
    assert_user_error(run_cli(*base, "--constraint", "flops", "--range", "50:60"), "outside the achievable range")
    assert_user_error(run_cli(*base, "--constraint", "flops"), "one --range per --constraint")
    assert_user_error(run_cli(*base, "--constraint", "flops", "--range", "abc"), "LO:HI")
    assert_user_error(run_cli(*base, "--constraint", "latency", "--range", ":3"), "--lut")
    assert_user_error(run_cli(*base[:3], "--data", tmp_path / "nope", *base[5:]), "does not exist")
    assert_user_error(run_cli("train-supernet", "--space", "shufflenetv2-small:classes=3", "--data", "digits", "--out", tmp_path / "y.pt"),
                      "use --space shufflenetv2-small:classes=10")  # fmt: skip
    assert_user_error(run_cli("train-supernet", "--space", SPACE, "--data", "digits", "--out", out), "already exists")
    assert_user_error(run_cli("retrain", "1,2", "--space", SPACE, "--data", "digits", "--out", tmp_path / "m.pt"), "blocks")


# ----------------------------------------------------------------------------- slow: processes


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _step(path: Path) -> int:
    return load_checkpoint(path)["step"] if path.is_file() else -1


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    args = ["--space", SPACE, "--data", "digits", "--steps", "40", "--batch-size", "16", "--threads", "1", "--ckpt-every", "2",
            "--log-every", "5"]  # fmt: skip
    out = tmp_path / "killed.pt"
    at = int(np.random.default_rng(8).integers(4, 24))  # a seeded random kill point
    kill_during([sys.executable, "-m", "spos_hw", "train-supernet", *args, "--out", str(out), "--json"],
                lambda: _step(out) >= at, rng=np.random.default_rng(at), env=_env())  # fmt: skip
    killed_at = load_checkpoint(out)["step"]
    assert 4 <= killed_at < 40
    cfg = dict(space=SPACE, data="digits", steps=40, batch_size=16, threads=1, ckpt_every=2, log_every=5)
    train_supernet(SupernetConfig(out=str(out), resume=True, **cfg), progress=False)
    train_supernet(SupernetConfig(out=str(tmp_path / "full.pt"), **cfg), progress=False)
    a, b = load_checkpoint(out), load_checkpoint(tmp_path / "full.pt")
    _states_equal(a["model"], b["model"])
    assert a["sampler"] == b["sampler"]


WORKER = """
import sys, torch
from spos_hw.nas import train as T

out, steps = sys.argv[1], int(sys.argv[2])
seen = {}
orig_arch, orig_run = T.Trainer._arch, T.Trainer.run
def arch(self):
    seen["row"] = orig_arch(self)
    return seen["row"]
def run(self, until, **kw):
    orig_run(self, until, **kw)
    on_path = {id(p) for p in self.model.path_parameters(seen["row"])}
    none_ok = all((p.grad is None) == (id(p) not in on_path) for p in self.model.parameters())
    rank = torch.distributed.get_rank()
    torch.save({"model": self.model.state_dict(), "grads_none_off_path": none_ok,
                "buffers": {k: v.clone() for k, v in self.model.state_dict().items() if "running" in k}}, f"{out}/rank{rank}.pt")
T.Trainer._arch, T.Trainer.run = arch, run
T.train_supernet(T.SupernetConfig(space=sys.argv[3], data="digits", steps=steps, batch_size=32, threads=1, lr=0.1,
                                  out=f"{out}/ddp.pt", ckpt_every=steps), progress=False)
"""


@pytest.mark.slow
def test_ddp_gloo_two_ranks_match_single_process(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    steps = 4
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker), str(tmp_path), str(steps), SPACE]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt", weights_only=True), torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["grads_none_off_path"] and r1["grads_none_off_path"]  # DDP leaves globally unused grads None
    _states_equal(r0["model"], r1["model"])  # replicas identical, BN statistics included (averaged)
    ddp = load_checkpoint(tmp_path / "ddp.pt")
    assert ddp["chunks"] == 2
    single = SupernetConfig(space=SPACE, data="digits", steps=steps, batch_size=32, threads=1, lr=0.1, accum=2,
                            out=str(tmp_path / "single.pt"), ckpt_every=steps)  # fmt: skip
    train_supernet(single, progress=False)
    one = load_checkpoint(tmp_path / "single.pt")
    assert one["sampler"] == ddp["sampler"]
    params = {n for n, _ in Supernet(get_space(SPACE)).named_parameters()}
    for name in params:
        torch.testing.assert_close(ddp["model"][name], one["model"][name], rtol=1e-4, atol=1e-5)
    init = _seeded_init(lambda: Supernet(get_space(SPACE)), 0).state_dict()
    assert sum(not torch.equal(ddp["model"][n], init[n]) for n in params) > 10  # training happened


def test_mbconv_supernet_trains_and_retrains(tmp_path):
    """A short fbnet-small run: sampled paths (skips included) train, unsampled paths stay put."""
    space_name = "fbnet-small:size=16"
    data = load_data("digits", get_space(space_name))
    space = get_space(space_name)
    rows = list(space.sample(np.random.default_rng(0), 3))
    trainer, net = _trainer(space_name, data, rows)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    on_path = {id(p) for p in net.path_parameters(rows[0])}
    trainer.train_step()
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) == (id(p) not in on_path), n
    out = tmp_path / "sn.pt"
    train_supernet(SupernetConfig(space=space_name, out=str(out), steps=4, holdout=100, **FAST), progress=False)
    loaded, _ = load_supernet(out, space)
    assert isinstance(loaded, Supernet)
    arch = space.random_arch(np.random.default_rng(1))
    res = retrain(RetrainConfig(space=space_name, arch=str(arch), out=str(tmp_path / "m.pt"), steps=3, **FAST), progress=False)
    assert res["finished"] and 0.0 <= res["test_accuracy"] <= 1.0
