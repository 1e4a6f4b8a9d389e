"""Weight-sharing modes: entangled groups from plans, exact materialize, frozen kernel rings, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spos_hw.errors import ArtifactError, ConfigError
from spos_hw.io import load_checkpoint, save_checkpoint
from spos_hw.nas.checkpoint import check_resumable, load_supernet
from spos_hw.nas.config import SupernetConfig, TrainConfig, resolve
from spos_hw.nas.data import BatchOrder, load_data
from spos_hw.nas.distributed import Dist
from spos_hw.nas.runs import train_supernet
from spos_hw.nas.sampling import UniformSampler
from spos_hw.nas.sharing import group_key, share_groups
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet
from spos_hw.nas.trainer import SupernetPolicy, Trainer
from spos_hw.nn.layers import crop_region, crop_weight

SPACE = "shufflenetv2-small:size=16"


class Replay:
    def __init__(self, rows):
        self.rows, self.i = list(rows), 0
        self.rng = np.random.default_rng(0)

    def sample(self, n=1):
        out = np.stack([self.rows[(self.i + j) % len(self.rows)] for j in range(n)])
        self.i += n
        return out


def _warm(net, space, rng, steps=3, batch=8):
    net.train()
    with torch.no_grad():
        for _ in range(steps):
            net(torch.randn(batch, *space.input_shape), space.random_arch(rng))
    net.eval()


def test_groups_come_from_plans():
    space = get_space("shufflenetv2-small")
    for pos in space.positions:
        plans = [space.block_plan(pos, op, space.max_mid(pos)) for op in range(len(space.ops))]
        assert share_groups(plans) == [(0, 1, 2), (3,)]  # kernel sizes differ only; Xception has its own structure
    resnet = get_space("resnet18-mixed")
    pos = resnet.positions[0]
    assert share_groups([resnet.block_plan(pos, 0, resnet.max_mid(pos))]) == [(0,)]
    a, b = (space.block_plan(space.positions[1], op, 16) for op in (0, 3))
    assert group_key(a) != group_key(b)


def test_entangled_ties_pointwise_and_crops_depthwise():
    space = get_space("shufflenetv2-small")
    net = Supernet(space, sharing="entangled")
    blk = net.blocks[0]  # a projection block: its projection depthwise is entangled too
    for unit in (0, 1, 2):
        assert blk[0].main[unit].conv.weight is blk[1].main[unit].conv.weight is blk[2].main[unit].conv.weight
    assert blk[0].main[1].conv.weight.shape[-2:] == (7, 7)
    assert blk[0].proj[0].conv.weight is blk[2].proj[0].conv.weight
    assert blk[3].main[0].conv.weight is not blk[0].main[0].conv.weight
    assert blk[0].main[0].bn is not blk[1].main[0].bn  # BN statistics per op
    assert sum(p.numel() for p in net.parameters()) == 325_872
    assert sum(p.numel() for p in Supernet(space, sharing="independent").parameters()) == 536_656
    assert Supernet(space).sharing == "entangled"  # the default (docs/training.md: measured)
    w = blk[2].main[1].conv.weight
    torch.testing.assert_close(blk[0].main[1].conv.own_weight(), w[:, :, 2:5, 2:5], rtol=0, atol=0)


def test_crop_region_centres_kernels_only():
    assert crop_region((8, 4, 7, 7), (6, 4, 3, 3)) == (slice(0, 6), slice(0, 4), slice(2, 5), slice(2, 5))
    assert crop_region((8,), (5,)) == (slice(0, 5),)
    w = torch.arange(49.0).reshape(1, 1, 7, 7)
    assert crop_weight(w, (1, 1, 1, 1)).item() == 24.0
    with pytest.raises(ValueError):
        crop_region((4, 1, 3, 3), (4, 1, 5, 5))


@pytest.mark.parametrize(
    "name",
    [
        "shufflenetv2-small",
        "shufflenetv2-small-ch",
        "shufflenetv2-small-w48a8",
        "shufflenetv2-small-ch:size=16",
        "fbnet-small",
        "proxylessnas-small",
    ],
)
def test_entangled_materialize_is_exact(name):
    space = get_space(name)
    torch.manual_seed(0)
    net = Supernet(space, sharing="entangled")
    rng = np.random.default_rng(0)
    _warm(net, space, rng)
    x = torch.randn(4, *space.input_shape)
    with torch.no_grad():
        for _ in range(6):
            arch = space.random_arch(rng)
            sub = net.materialize(arch).eval()
            torch.testing.assert_close(sub(x), net(x, arch), rtol=0, atol=1e-5)
            if not space.quantized:  # quantized subnets also hold step sizes
                assert sum(p.numel() for p in sub.parameters()) == space.params.cost(arch.to_array())


def test_quantized_mixed_space_builds_entangled():
    space = get_space("resnet18-mixed")
    net = Supernet(space, sharing="entangled")  # one op: nothing to tie, but the mode works
    arch = space.random_arch(np.random.default_rng(1))
    assert net(torch.randn(2, *space.input_shape), arch).shape == (2, space.num_classes)


def test_unknown_sharing_is_a_config_error():
    with pytest.raises(ConfigError, match="weight sharing"):
        Supernet(get_space(SPACE), sharing="tied")
    with pytest.raises(ConfigError, match="--sharing"):
        SupernetConfig(space=SPACE, data="digits", sharing="tied")


@pytest.fixture(scope="module")
def digits16():
    return load_data("digits", get_space(SPACE))


def _trainer(data, rows, **cfg):
    space = get_space(SPACE)
    torch.manual_seed(0)
    net = Supernet(space, sharing="entangled")
    config = resolve(
        TrainConfig(space=SPACE, data="digits", out="-", steps=100, batch_size=16, lr=0.5, weight_decay=1e-3, **cfg),
        len(data.train),
    )
    order = BatchOrder(np.arange(len(data.train)), 16, 0)
    return Trainer(net, SupernetPolicy(net, Replay(rows)), data=data, order=order, config=config, dist=Dist()), net


def test_kernel_ring_outside_the_sampled_crop_does_not_move(digits16):
    space = get_space(SPACE)
    rows = [np.zeros((space.num_blocks, 4), dtype=np.int64), np.zeros((space.num_blocks, 4), dtype=np.int64)]
    rows[0][:, 0] = 2  # a 7x7 step first, so the ring has momentum, then a 3x3 step
    tr, net = _trainer(digits16, rows)
    w = net.blocks[1][2].main[1].conv.weight
    tr.train_step()
    before, buf = w.detach().clone(), tr.opt.state[w]["momentum_buffer"].clone()
    other = net.blocks[1][3].main[0].conv.weight.detach().clone()  # Xception: not on either path
    tr.train_step()  # the 3x3 op: it uses the centre only
    ring = torch.ones_like(w, dtype=torch.bool)
    ring[:, :, 2:5, 2:5] = False
    assert torch.equal(w.detach()[ring], before[ring]) and torch.equal(tr.opt.state[w]["momentum_buffer"][ring], buf[ring])
    assert not torch.equal(w.detach()[~ring], before[~ring])
    assert torch.equal(net.blocks[1][3].main[0].conv.weight, other)


def test_checkpoint_records_sharing_and_old_ones_are_independent(tmp_path):
    out = tmp_path / "sn.pt"
    r = train_supernet(
        SupernetConfig(space=SPACE, data="digits", steps=2, batch_size=16, threads=1, out=str(out), sharing="entangled"),
        progress=False,
    )
    assert r["sharing"] == "entangled"
    net, ckpt = load_supernet(out)
    assert net.sharing == "entangled" and ckpt["sharing"] == "entangled" and ckpt["config"]["sharing"] == "entangled"
    old = load_checkpoint(out, "test")
    old.pop("sharing")
    old["config"].pop("sharing")
    old["model"] = Supernet(net.space, sharing="independent").state_dict()
    save_checkpoint(tmp_path / "old.pt", old)
    net_old, _ = load_supernet(tmp_path / "old.pt")
    assert net_old.sharing == "independent"
    config = dict(ckpt["config"], sharing="independent")
    check_resumable(old, kind="supernet", space=net.space, config=config, path="old.pt")  # unrecorded: independent
    old["sharing"] = "braided"
    save_checkpoint(tmp_path / "bad.pt", old)
    with pytest.raises(ArtifactError, match="braided"):
        load_supernet(tmp_path / "bad.pt")


def test_quantized_entangled_supernet_trains_and_materializes():
    name = "shufflenetv2-small-w48a8:size=16"
    space = get_space(name)
    data = load_data("digits", space)
    torch.manual_seed(0)
    net = Supernet(space, sharing="entangled")
    config = resolve(TrainConfig(space=name, data="digits", out="-", steps=10, batch_size=16, lr=0.1), len(data.train))
    sampler = UniformSampler(space, rng=np.random.default_rng(0))
    tr = Trainer(
        net,
        SupernetPolicy(net, sampler),
        data=data,
        order=BatchOrder(np.arange(len(data.train)), 16, 0),
        config=config,
        dist=Dist(),
    )
    for _ in range(3):
        tr.train_step()
    conv = net.blocks[4][0].main[1].conv  # an entangled 3x3 depthwise (cropped from the 7x7)
    assert conv.weight.shape[-1] == 7 and conv.own_weight().shape[-1] == 3
    for q in conv.wq.values():  # per-channel step sizes sized to the layer's own channels
        assert q.scale.shape[0] == conv.out_channels
    net.eval()
    x = torch.randn(3, *space.input_shape)
    arch = space.random_arch(np.random.default_rng(3))
    with torch.no_grad():
        torch.testing.assert_close(net.materialize(arch).eval()(x), net(x, arch), rtol=0, atol=1e-5)
