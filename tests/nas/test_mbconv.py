"""The mbconv family (FBNet, ProxylessNAS): exact costs against timm, candidate names, where skip is
allowed and the errors for a misplaced one. How the choice mask reaches costs, sampling, budgets,
calibration and the supernet is tested beside each (test_space, test_sampling, test_strategy,
latency/test_calibration, test_supernet, test_blocks)."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spos_hw.errors import ArchError, SpaceError
from spos_hw.nas.space import Stage
from spos_hw.nas.spaces import get_space, list_spaces
from spos_hw.nas.spaces.mbconv import FBNET_OPS, MBConvSpace, make_divisible, parse_op
from spos_hw.nas.supernet import SubNet

timm = pytest.importorskip("timm")

# timm's arch defs, block by block, in our candidate indices (a skip where timm's stage is shorter)
FBNET = {n: i for i, n in enumerate(FBNET_OPS)}
FBNET_C = [
    FBNET[o]
    for o in (
        "k3_e1",
        "k3_e6",
        "k3_e1",
        "k3_e1",
        "skip",
        "k5_e6",
        "k5_e3",
        "k5_e6",
        "k3_e6",
        "k5_e6",
        "k5_e3",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e3",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k3_e6",
    )
]
PX = {n: i for i, n in enumerate(get_space("proxylessnas-imagenet").ops)}
MNASNET_B1 = [
    PX[o]
    for o in (
        "k3_e3",
        "k3_e3",
        "k3_e3",
        "skip",
        "k5_e3",
        "k5_e3",
        "k5_e3",
        "skip",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "skip",
        "k3_e6",
        "k3_e6",
        "skip",
        "skip",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k3_e6",
    )
]
SPNASNET = [
    PX[o]
    for o in (
        "k3_e3",
        "k3_e3",
        "k3_e3",
        "skip",
        "k5_e6",
        "k3_e3",
        "k3_e3",
        "k3_e3",
        "k5_e6",
        "k3_e3",
        "k3_e3",
        "k3_e3",
        "k5_e6",
        "k5_e3",
        "k5_e3",
        "k5_e3",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k5_e6",
        "k3_e6",
    )
]


def mobilenetv2_space() -> MBConvSpace:
    """MobileNetV2's macro-architecture (it does not fit ProxylessNAS's widths: 32/64/160 vs 40/80/192)."""
    return MBConvSpace(
        name="mobilenetv2",
        input_shape=(3, 224, 224),
        num_classes=1000,
        ops=("k3_e6",),
        stem_channels=32,
        first_block=16,
        stages=(Stage(2, 24), Stage(3, 32), Stage(4, 64), Stage(3, 96, 1), Stage(3, 160), Stage(1, 320, 1)),
        head_channels=1280,
    )


def _count(model, shape) -> tuple[int, int]:
    """Conv + linear multiply-adds (FlopCounterMode) and parameters of a module, on the meta device."""
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(*shape, device="meta"))
    return counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters())


def _timm(name):
    with torch.device("meta"):
        return _count(timm.create_model(name, pretrained=False).eval(), (1, 3, 224, 224))


def _ours(space, ops):
    row = space.arch(ops).to_array()
    return int(space.flops.cost(row)), int(space.params.cost(row))


@pytest.mark.parametrize(
    "timm_name, space, ops",
    [
        ("fbnetc_100", "fbnet-imagenet", FBNET_C),
        ("mnasnet_100", "proxylessnas-imagenet", MNASNET_B1),
        ("spnasnet_100", "proxylessnas-imagenet", SPNASNET),
        ("mobilenetv2_100", mobilenetv2_space, [0] * 16),
    ],
)
def test_known_nets_match_timm_exactly(timm_name, space, ops):
    """Our cost tables, and our built modules, give timm's conv + FC MACs and parameter count."""
    space = space() if callable(space) else get_space(space)
    expect = _timm(timm_name)
    assert _ours(space, ops) == expect
    with torch.device("meta"):
        assert _count(SubNet(space, space.arch(ops)).eval(), (1, *space.input_shape)) == expect


def test_fbnet_c_figures():
    """FBNet-C as timm builds it: 384.96M MACs (the FBNet paper says 375M), 5.57M parameters."""
    assert _ours(get_space("fbnet-imagenet"), FBNET_C) == (384_960_160, 5_572_200)


def test_proxylessnas_gpu_in_its_space():
    """ProxylessNAS-GPU (widths x1.35 of the search space; blocks as pytorchcv's ``proxylessnas_gpu``)
    has pytorchcv's published 7,119,848 parameters and the 465M FLOPs of the SPOS paper's Table 5."""
    space = get_space("proxylessnas-gpu-imagenet")
    ks = [5, 3, 3, 3, 7, 3, 3, 3, 7, 5, 5, 5, 5, 3, 3, 5, 7, 7, 7, 5, 7]
    es = [3, 3, 3, 3, 3, 3, 3, 3, 6, 3, 3, 3, 6, 3, 3, 3, 6, 6, 6, 6, 6]
    real = [1, 0, 0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]  # 0: the zero op (a skip)
    ops = [space.ops.index(f"k{k}_e{e}" if r else "skip") for k, e, r in zip(ks, es, real)]
    flops, params = _ours(space, ops)
    assert params == 7_119_848 and round(flops / 1e6) == 465


def test_se_hswish_block_matches_timm_inverted_residual():
    """A MobileNetV3-style candidate (SE + h-swish) costs what timm's InvertedResidual costs."""
    from timm.models._efficientnet_blocks import InvertedResidual, SqueezeExcite
    from timm.models._efficientnet_builder import round_channels

    space = MBConvSpace(
        name="v3",
        input_shape=(3, 32, 32),
        num_classes=10,
        ops=("k5_e6_se_hs", "k3_e3_se"),
        stem_channels=24,
        stem_stride=1,
        stages=(Stage(2, 40),),
        head_channels=64,
    )
    se = partial(SqueezeExcite, gate_layer="hard_sigmoid", rd_round_fn=round_channels)
    for pos in space.positions:
        for op, (k, e, act) in enumerate([(5, 6, torch.nn.Hardswish), (3, 3, torch.nn.ReLU)]):
            plan = space.block_plan(pos, op, 0)
            with torch.device("meta"):
                block = InvertedResidual(
                    pos.in_channels, pos.out_channels, k, pos.stride, exp_ratio=e, act_layer=act, se_layer=se
                ).eval()
                assert _count(block, (1, pos.in_channels, *pos.in_hw)) == (plan.macs, plan.params())


def test_candidate_names():
    assert parse_op("k5_e1_g2").groups == 2 and parse_op("skip") is None
    c = parse_op("k7_e2.5_se_hs")
    assert (c.kernel, c.expand, c.se, c.hswish) == (7, 2.5, True, True)
    for bad in ["k4_e3", "k3", "e3_k3", "k3_e0", "k3_e3_g0", "k3_e3_hs_se"]:
        with pytest.raises(SpaceError, match="unknown mbconv candidate"):
            parse_op(bad)
    assert [make_divisible(v) for v in (16, 21.6, 43.2, 54, 129.6)] == [16, 24, 40, 56, 128]
    with pytest.raises(SpaceError, match="divisible by 2"):
        MBConvSpace(
            name="x",
            input_shape=(1, 8, 8),
            num_classes=2,
            ops=("k3_e1_g2",),
            stem_channels=3,
            stem_stride=1,
            stages=(Stage(1, 4, 1),),
            head_channels=4,
        )
    with pytest.raises(SpaceError, match="channel_scales"):
        MBConvSpace(
            name="x",
            input_shape=(1, 8, 8),
            num_classes=2,
            ops=("k3_e1",),
            channel_scales=(0.5, 1.0),
            stages=(Stage(1, 4, 1),),
            head_channels=4,
        )


# ----------------------------------------------------------------------------- skip and the choice mask


def test_skip_is_a_choice_only_where_width_and_stride_are_kept():
    space = get_space("fbnet-imagenet")
    mask = space.choice_mask()
    assert mask.shape == (22, 9, 1, 1, 1)
    skip = space.ops.index("skip")
    for pos in space.positions:
        assert mask[pos.index, skip].all() == (pos.stride == 1 and pos.in_channels == pos.out_channels)
        assert mask[pos.index, :skip].all()
    assert sum(mask[:, skip].ravel()) == 16  # 22 layers, 6 change width or stride
    assert space.size == 9**16 * 8**6
    for name in list_spaces():  # every other family allows every choice everywhere
        s = get_space(name)
        assert s.masked == (s.family == "mbconv"), name


def test_quantized_skip_has_only_its_first_bit_index():
    space = get_space("fbnet-small-w48a8")
    mask = space.choice_mask()
    assert mask[0, 8, 0, 0, 0] and not mask[0, 8, 0, 1, 0] and mask[0, :8].all()
    assert space.size == 17**16 * 16**6
    with pytest.raises(
        ArchError,
        match=r"block 0 \(8->8 channels, stride 1\): op 8 \(skip\), w 1 \(8\) is not allowed: skip has no layers.*allowed w here: 0=4",
    ):
        space.arch("op=" + ",".join(["8"] + ["0"] * 21) + ";w=" + ",".join(["1"] + ["0"] * 21))


@pytest.mark.parametrize(
    "ops, needle",
    [
        (
            [0, 8] + [0] * 20,
            r"block 1 \(8->16 channels, stride 1\): op 8 \(skip\) is not allowed: skip is the identity, so it cannot "
            r"change width or stride; allowed op here: 0=k3_e1, 1=k3_e1_g2, .*, 7=k5_e6$",
        ),
        ([0, 9] + [0] * 20, r"block 1: op index 9 is out of range; allowed 0=k3_e1, .*, 7=k5_e6$"),
        ([0, 0, 9] + [0] * 19, r"block 2: op index 9 is out of range; allowed 0=k3_e1, .*, 8=skip$"),
    ],
)
def test_bad_skip_and_out_of_range_are_one_line_errors(ops, needle):
    space = get_space("fbnet-small")
    with pytest.raises(ArchError, match=needle) as exc:
        space.arch(ops)
    assert "\n" not in str(exc.value)
    batch = np.zeros((2, 22, 4), dtype=np.int64)
    batch[1, :, 0] = np.minimum(ops, 8)
    if max(ops) == 8:
        with pytest.raises(ArchError, match=r"architecture 1, block 1 .*skip.* is not allowed"):
            space.check_batch(batch)
