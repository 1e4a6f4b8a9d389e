"""Search-space specs, architectures and the vectorized cost tables (FLOPs, params, BitOps)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.flop_counter import FlopCounterMode

from spos_hw.errors import ArchError, SpaceError
from spos_hw.nas.space import Arch, SearchSpace
from spos_hw.nas.spaces import get_space, list_spaces
from spos_hw.nas.supernet import SubNet
from spos_hw.quant.layers import QuantConv2d, QuantLinear
from tests.support.spaces import all_op_archs

PAPER_ARCH = "2,1,0,1,2,0,2,0,2,0,2,3,0,0,0,0,3,2,3,3"
ALL = list_spaces()


def test_paper_arch_exact_costs():
    space = get_space("shufflenetv2-imagenet")
    s = space.summarize(space.arch(PAPER_ARCH))
    assert (s["flops"], s["params"]) == (322_918_720, 3_558_464)


def test_paper_space_shape():
    space = get_space("shufflenetv2-imagenet")
    assert space.num_blocks == 20 and space.sizes == (4, 1, 1, 1) and space.size == 4**20
    assert [p.stride for p in space.positions if p.stride == 2] == [2, 2, 2, 2]
    assert [p.in_hw[0] for p in space.positions[::4]] == [112, 56, 28, 14, 14]
    ch = get_space("shufflenetv2-imagenet-ch")
    assert ch.channel_scales == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6)
    assert ch.mid_choices(ch.positions[0])[4] == 32  # scale 1.0 is the block-search width


def test_fingerprints_are_stable():
    """Artifacts are keyed by these; a change here invalidates every user's tables and checkpoints."""
    expect = json.loads((__import__("pathlib").Path(__file__).parents[1] / "expect" / "fingerprints.json").read_text())
    assert {name: get_space(name).fingerprint for name in expect} == expect


def test_space_json_round_trip(tmp_path):
    for name in ALL:
        space = get_space(name)
        again = SearchSpace.from_json(json.loads(json.dumps(space.to_json())))
        assert again == space and again.fingerprint == space.fingerprint
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(get_space("shufflenetv2-small").to_json()))
    assert get_space(str(path)).fingerprint == get_space("shufflenetv2-small").fingerprint


def test_space_overrides():
    s = get_space("shufflenetv2-small:classes=100,channels=3")
    assert s.num_classes == 100 and s.input_shape == (3, 32, 32)
    assert s.fingerprint != get_space("shufflenetv2-small").fingerprint
    for bad in ["shufflenetv2-small:classes=0", "shufflenetv2-small:depth=3", "nope", "missing.json"]:
        with pytest.raises(SpaceError):
            get_space(bad)


def test_space_module_imports_no_torch():
    code = "import sys, spos_hw.nas.spaces; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ALL)
def test_arch_string_and_json_round_trip(name):
    space = get_space(name)
    rng = np.random.default_rng(1)
    for _ in range(20):
        arch = space.random_arch(rng)
        assert space.arch(str(arch)) == arch
        assert space.arch(json.loads(json.dumps(arch.to_json()))) == arch
        assert space.decode(space.encode([arch]))[0] == arch
        assert hash(arch) == hash(space.arch(str(arch)))


def test_arch_string_forms():
    space = get_space("shufflenetv2-small-ch")
    arch = space.arch("ch=" + ",".join(["7"] * 20) + ";op=" + ",".join(["1"] * 20))
    assert str(arch).startswith("op=1,") and ";ch=7," in str(arch)
    assert arch.ops == (1,) * 20 and arch.channels == (7,) * 20 and arch.wbits == (0,) * 20
    assert str(get_space("shufflenetv2-small").arch([3] * 20)) == ",".join(["3"] * 20)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("1,2,3", "has 3 blocks"),
        (",".join(["0"] * 19 + ["4"]), "block 19: op index 4 is out of range; allowed 0=shuffle3x3"),
        (",".join(["0"] * 19 + ["-1"]), "block 19"),
        ("a,b,c", "comma-separated integers"),
        ("", "empty"),
        ("op=" + ",".join(["0"] * 20) + ";zz=1", "unknown architecture dimension 'zz'"),
        ("op=1;op=2", "given twice"),
    ],
)
def test_bad_arch_messages(text, needle):
    with pytest.raises(ArchError, match=None) as exc:
        get_space("shufflenetv2-small").arch(text)
    assert needle in str(exc.value)


def test_multi_dim_space_needs_named_dims():
    with pytest.raises(ArchError, match=r"op=\.\.\.;ch=\.\.\."):
        get_space("shufflenetv2-small-ch").arch(",".join(["0"] * 20))
    with pytest.raises(ArchError, match="missing"):
        get_space("shufflenetv2-small-ch").arch("op=" + ",".join(["0"] * 20))


@pytest.mark.parametrize("name", ALL)
def test_vectorized_costs_equal_per_arch_loop(name):
    space = get_space(name)
    batch = space.sample(np.random.default_rng(2), 64)
    for model in (space.flops, space.params, space.bitops):
        vec = model.cost(batch)
        loop = [model.cost(row) for row in batch]
        np.testing.assert_array_equal(vec, loop)
        lo, hi = model.bounds()
        assert lo <= vec.min() and vec.max() <= hi


def test_bounds_are_attained():
    space = get_space("shufflenetv2-small-ch")
    pb = space.flops.per_block
    best = pb.argmin(axis=1)
    batch = np.zeros((1, space.num_blocks, 4), dtype=np.int64)
    batch[0, :, 0], batch[0, :, 1] = np.unravel_index(best, space.sizes)[:2]
    assert space.flops.cost(batch)[0] == space.flops.bounds()[0]


def test_affine_cost_stays_additive():
    space = get_space("shufflenetv2-small")
    batch = space.sample(np.random.default_rng(3), 16)
    lat = space.flops.affine(2e-9, 0.5, name="latency")
    np.testing.assert_allclose(lat.cost(batch), 2e-9 * space.flops.cost(batch) + 0.5)


def _measured(space, arch):
    """FLOPs (MACs) and params of the real materialized module, built on the meta device."""
    with torch.device("meta"):
        net = SubNet(space, arch).eval()
        x = torch.empty(1, *space.input_shape)
        with FlopCounterMode(display=False) as counter:
            net(x)
    # LSQ step sizes of quantized layers (``.wq.`` / ``.aq.``) become Q/DQ scales, not weights
    params = sum(p.numel() for n, p in net.named_parameters() if ".wq." not in n and ".aq." not in n)
    return counter.get_total_flops() // 2, params


@pytest.mark.parametrize(
    "name", [n for n in ALL if not get_space(n).quantized]
)  # quantized: test_bitops_tables_match_real_modules
def test_cost_tables_match_real_modules(name):
    space = get_space(name)
    rng = np.random.default_rng(4)
    archs = [space.random_arch(rng) for _ in range(12)]
    archs += [space.decode(np.full((space.num_blocks, 4), 0))[0]]
    for arch in archs:
        flops, params = _measured(space, arch)
        row = arch.to_array()
        assert (flops, params) == (space.flops.cost(row), space.params.cost(row)), str(arch)


def test_check_batch_rejects_bad_shapes_and_ranges():
    space = get_space("shufflenetv2-small")
    with pytest.raises(ArchError, match="shape"):
        space.check_batch(np.zeros((2, 3, 4)))
    bad = np.zeros((2, 20, 4), dtype=int)
    bad[1, 7, 0] = 9
    with pytest.raises(ArchError, match="architecture 1, block 7: op index 9"):
        space.check_batch(bad)


def test_arch_requires_consistent_lengths():
    with pytest.raises(ArchError):
        Arch(("op", "ch"), ((1, 2), (1,)))


# ----------------------------------------------------------------------------- BitOps = MACs x weight bits x activation bits


def _measured_bitops(space, arch) -> tuple[int, int, int]:
    """FLOPs, params and BitOps of the real subnet (meta device): BitOps add up, per conv/linear
    call, MACs x the bits it was called with; FLOPs come from FlopCounterMode."""
    total = 0

    def hook(module, args, kwargs, out):
        nonlocal total
        x = args[0]
        bits = kwargs.get("bits", args[-1] if len(args) > 1 else None)
        if isinstance(module, QuantConv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = x.shape[1] if depthwise else module.groups  # FBNet's group-2 pointwise convs are not depthwise
            macs = out[0].numel() * (x.shape[1] // groups) * module.kernel_size[0] * module.kernel_size[1]
        else:
            macs = out[0].numel() * x.shape[1]
        total += macs * bits[0] * bits[1]

    with torch.device("meta"):
        net = SubNet(space, arch).eval()
    for m in net.modules():
        if isinstance(m, (QuantConv2d, QuantLinear)):
            m.register_forward_hook(hook, with_kwargs=True)
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(1, *space.input_shape, device="meta"))
    # LSQ step sizes (``.wq.`` / ``.aq.``) become Q/DQ scales; params count weights and BN affine
    params = sum(p.numel() for n, p in net.named_parameters() if ".wq." not in n and ".aq." not in n)
    return counter.get_total_flops() // 2, params, total


@pytest.mark.parametrize(
    "name, n",
    [("resnet18-mixed", 6), ("shufflenetv2-small-w48a8", 3), ("shufflenetv2-imagenet-w48a8", 1), ("fbnet-small-w48a8", 4)],
)
def test_bitops_tables_match_real_modules(name, n):
    """FLOPs, params and BitOps tables against the real modules (the float spaces' twin of this
    check is test_cost_tables_match_real_modules above)."""
    space = get_space(name)
    rng = np.random.default_rng(0)
    archs = [space.random_arch(rng) for _ in range(n)]
    batch = space.encode(archs)
    expect = np.stack([space.flops.cost(batch), space.params.cost(batch), space.bitops.cost(batch)], 1)
    np.testing.assert_array_equal(expect, [_measured_bitops(space, a) for a in archs])


def test_uniform_2w2a_budget_by_hand():
    """The budget of the paper's comparison: every block at 2W2A, stem and head at 8/8."""
    space = get_space("resnet18-mixed")
    two = space.wbits.index(2)
    row = np.zeros((space.num_blocks, 4), dtype=np.int64)
    row[:, 1] = len(space.channel_scales) - 1  # full width
    row[:, 2] = row[:, 3] = two
    head_convs, linear = space.head_plan()
    fixed = sum(c.macs for c in space.stem_plan() + head_convs) + linear.macs
    blocks = sum(space.plan(p, row[p.index]).macs for p in space.positions)
    assert space.bitops.cost(row) == fixed * 64 + blocks * 4
    assert space.bitops.cost(row) == space.flops.cost(row) * 4 + fixed * 60


def test_bitops_is_a_vectorized_constraint():
    space = get_space("resnet18-mixed")
    model = space.cost_model("bitops")
    batch = space.sample(np.random.default_rng(1), 256)
    costs = model.cost(batch)
    lo, hi = model.bounds()
    assert costs.shape == (256,) and lo <= costs.min() and costs.max() <= hi
    assert model.scale == 1e9  # --bitops-g 0.08 means 8e7 BitOps


# ----------------------------------------------------------------------------- choices allowed at some blocks only (skip)


def test_costs_exclude_disallowed_choices(tiny_mbconv):
    tiny = tiny_mbconv
    batch = all_op_archs(tiny)
    assert len(batch) == tiny.size == 192
    for model in (tiny.flops, tiny.params):
        assert np.isnan(model.table[2, 3]).all() and not np.isnan(model.table[[0, 1, 3]]).any()
        costs = model.cost(batch)
        assert model.bounds() == (costs.min(), costs.max())
        lat = model.affine(1e-6, 0.5)
        assert lat.bounds() == pytest.approx((1e-6 * costs.min() + 0.5, 1e-6 * costs.max() + 0.5))
        assert np.isnan(model.cost(np.zeros((4, 4), dtype=np.int64) + np.array([3, 0, 0, 0])))  # skip everywhere


def test_uniform_sampling_draws_only_allowed_choices_uniformly(tiny_mbconv):
    tiny = tiny_mbconv
    draws = tiny.sample(np.random.default_rng(0), 8000)
    tiny.check_batch(draws)
    for b, n in [(0, 4), (2, 3)]:
        counts = np.bincount(draws[:, b, 0], minlength=4)[:n]
        assert counts.sum() == 8000 and chisquare(counts).pvalue > 1e-3
