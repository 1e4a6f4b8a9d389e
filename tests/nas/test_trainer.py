"""The training loop: unsampled paths and unused slices stay put, step sizes stay positive, parameter groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spos_hw.nas.config import TrainConfig, resolve
from spos_hw.nas.data import BatchOrder, load_data
from spos_hw.nas.distributed import Dist
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import SubNet, Supernet
from spos_hw.nas.trainer import STEP_LR_SCALE, SupernetPolicy, Trainer, param_groups

SPACE = "shufflenetv2-small:size=16"
SPACE_CH = "shufflenetv2-small-ch:size=16"


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
    net = Supernet(space, sharing=cfg.pop("sharing", "independent"))
    config = resolve(
        TrainConfig(space=space_name, data="digits", out="-", steps=100, batch_size=16, lr=0.5, weight_decay=1e-3, **cfg),
        len(data.train),
    )
    order = BatchOrder(np.arange(len(data.train)), 16, 0)
    return Trainer(net, SupernetPolicy(net, Sequence_(rows)), data=data, order=order, config=config, dist=Dist()), net


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
    space = get_space("resnet18-mixed")
    sub = SubNet(space, space.decode(space.sample(np.random.default_rng(0), 1))[0])
    groups = param_groups(sub, 4e-5, 0.1)
    assert len(groups) == 3
    step = groups[2]
    names = {id(p): n for n, p in sub.named_parameters()}
    assert step["params"] and all(names[id(p)].endswith(".scale") for p in step["params"])
    assert step["lr"] == pytest.approx(0.1 * STEP_LR_SCALE) and step["weight_decay"] == 0.0
    assert not any(names[id(p)].endswith(".scale") for g in groups[:2] for p in g["params"])


def test_unused_slices_stay_put_over_steps_inputs_and_step_sizes(digits16):
    """A wide step fills every momentum buffer; then narrow steps must leave the unused output
    rows, input columns and per-channel step sizes exactly where the wide step put them."""
    name = "resnet18-mixed:size=16"
    space = get_space(name)
    wide = np.zeros((space.num_blocks, 4), dtype=np.int64)
    wide[:, 1] = len(space.channel_scales) - 1  # scale 1.0; op 0, 1-bit weights and activations everywhere
    narrow = wide.copy()
    narrow[:, 1] = 0  # scale 0.5
    tr, net = _trainer(name, digits16, [wide, narrow, narrow])
    block = net.blocks[1][0]  # a stride-1 basic block: conv1 (in -> mid) and conv2 (mid -> out)
    conv1, conv2 = block.main[0].conv, block.main[1].conv
    mid = space.mid_choices(space.positions[1])[0]
    step_size = conv1.wq["b1"].scale
    tr.train_step()  # the wide path: momentum everywhere
    kept = {"rows": conv1.weight.detach().clone(), "cols": conv2.weight.detach().clone(), "steps": step_size.detach().clone()}
    bufs = {
        k: tr.opt.state[p]["momentum_buffer"].clone()
        for k, p in (("rows", conv1.weight), ("cols", conv2.weight), ("steps", step_size))
    }
    assert all(b.abs().max() > 0 for b in bufs.values())
    tr.train_step()
    tr.train_step()  # two narrow steps: momentum is non-empty
    outside = {"rows": (slice(mid, None),), "cols": (slice(None), slice(mid, None)), "steps": (slice(mid, None),)}
    params = {"rows": conv1.weight, "cols": conv2.weight, "steps": step_size}
    for k, where in outside.items():
        assert torch.equal(params[k].detach()[where], kept[k][where]), k
        assert torch.equal(tr.opt.state[params[k]]["momentum_buffer"][where], bufs[k][where]), k
    inside = {"rows": (slice(0, mid),), "cols": (slice(None), slice(0, mid)), "steps": (slice(0, mid),)}
    assert all(not torch.equal(params[k].detach()[w], kept[k][w]) for k, w in inside.items())  # the used part trained


def test_mbconv_supernet_step_moves_only_the_sampled_path():
    """fbnet-small: a sampled path (skips included) trains, unsampled paths stay put."""
    space_name = "fbnet-small:size=16"
    space = get_space(space_name)
    data = load_data("digits", space)
    rows = list(space.sample(np.random.default_rng(0), 3))
    trainer, net = _trainer(space_name, data, rows)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    on_path = {id(p) for p in net.path_parameters(rows[0])}
    trainer.train_step()
    for n, p in net.named_parameters():
        assert torch.equal(p, before[n]) == (id(p) not in on_path), n
