"""BN recalibration + held-out scoring of supernet paths (freshly initialised nets, random data)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from spos_hw.errors import DataError
from spos_hw.nas.recalibrate import ScoringData, SupernetScorer, default_recal_images
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet

SPACE = get_space("shufflenetv2-small-ch:size=8")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    net = Supernet(SPACE)
    g = torch.Generator().manual_seed(1)
    recal = [torch.randn(32, *SPACE.input_shape, generator=g) * 2 + 0.5 for _ in range(3)]
    hx = torch.randn(96, *SPACE.input_shape, generator=g)
    hy = torch.randint(0, SPACE.num_classes, (96,), generator=g)
    data = ScoringData.build(recal, [(hx[:50], hy[:50]), (hx[50:], hy[50:])])
    # stale, path-mixed statistics, as a trained supernet has
    net.train()
    with torch.no_grad():
        for row in SPACE.sample(np.random.default_rng(0), 3):
            net(recal[0], row)
    rows = SPACE.sample(np.random.default_rng(1), 3)
    return net, data, recal, (hx, hy), rows


def _reference(net, recal, holdout, row):
    """The plain recipe: copy, reset every BN, cumulative averages, whole net in train mode."""
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        ref.train()
        for x in recal:
            ref(x, row)
        ref.eval()
        logits = ref(holdout[0], row)
    return ref, int((logits.argmax(1) == holdout[1]).sum()) / len(holdout[1])


def test_scores_match_reference_and_do_not_depend_on_order(setup):
    net, data, recal, holdout, rows = setup
    scorer = SupernetScorer(copy.deepcopy(net), data)
    first = scorer(rows)
    again = scorer(rows[::-1])[::-1]
    np.testing.assert_array_equal(first, again)
    for row, s in zip(rows, first):
        _, want = _reference(net, recal, holdout, row)
        assert s == pytest.approx(want, abs=1e-12)


def test_quantized_supernet_scores_like_a_fresh_copy_per_candidate():
    """Mixed precision: per-bit BN on the path, and never-trained quantizers that initialise from
    data are put back after each candidate, so scores match a fresh copy and ignore the order."""
    space = get_space("resnet18-mixed:size=8")
    torch.manual_seed(0)
    net = Supernet(space)
    g = torch.Generator().manual_seed(2)
    recal = [torch.randn(32, *space.input_shape, generator=g) for _ in range(2)]
    hx, hy = torch.randn(64, *space.input_shape, generator=g), torch.randint(0, 10, (64,), generator=g)
    # contiguous format, as the reference runs: fake-quant rounding is sensitive to the last float bit
    scorer = SupernetScorer(copy.deepcopy(net), ScoringData.build(recal, [(hx, hy)], channels_last=False), channels_last=False)
    rows = space.sample(np.random.default_rng(3), 3)
    got = scorer(rows)
    np.testing.assert_array_equal(got, scorer(rows[::-1])[::-1])
    want = [_reference(net, recal, (hx, hy), row)[1] for row in rows]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_recalibrated_statistics_are_exact_averages(setup):
    net, data, recal, holdout, rows = setup
    scorer = SupernetScorer(copy.deepcopy(net), data)
    scorer.recalibrate(rows[0])
    stem_conv, stem_bn = scorer.net.stem.units[0].conv, scorer.net.stem.units[0].bn
    with torch.no_grad():
        outs = [stem_conv(x.contiguous()) for x in recal]
    mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(stem_bn.running_mean, mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stem_bn.running_var, var, rtol=1e-4, atol=1e-5)
    assert int(stem_bn.num_batches_tracked) == len(recal)
    # the materialized subnet inherits the recalibrated statistics and scores the same
    sub = scorer.net.materialize(SPACE.decode(rows[0])[0]).eval()
    with torch.no_grad():
        acc = int((sub(holdout[0]).argmax(1) == holdout[1]).sum()) / len(holdout[1])
    scorer.recalibrate(rows[0])
    assert scorer.accuracy(rows[0]) == pytest.approx(acc, abs=1e-12)


def test_inference_only_dropout_off_other_paths_untouched(setup):
    net, data, recal, holdout, rows = setup
    scorer = SupernetScorer(copy.deepcopy(net), data)
    seen = []
    hook = scorer.net.head.dropout.register_forward_pre_hook(
        lambda m, a: seen.append((m.training, torch.is_inference_mode_enabled(), a[0].requires_grad))
    )
    ops = rows[0][:, 0]
    other = [scorer.net.blocks[i][(int(op) + 1) % len(SPACE.ops)] for i, op in enumerate(ops)]
    before = [copy.deepcopy(m.state_dict()) for m in other]
    try:
        scorer(rows[:1])
    finally:
        hook.remove()
    assert seen and all(s == (False, True, False) for s in seen)
    assert all(p.grad is None for p in scorer.net.parameters())
    for m, b in zip(other, before):
        for k, v in m.state_dict().items():
            assert torch.equal(v, b[k]), k
    assert not any(m.training for m in scorer.net.modules())


def test_scoring_data_checks():
    x = torch.zeros(4, *SPACE.input_shape)
    with pytest.raises(DataError, match="at least one"):
        ScoringData.build([], [(x, torch.zeros(4, dtype=torch.long))])
    with pytest.raises(DataError, match="held-out"):
        ScoringData.build([x], [])
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        ScoringData.build([x[0]], [(x, torch.zeros(4, dtype=torch.long))])
    data = ScoringData.build([x, x], [(x, torch.zeros(4, dtype=torch.long))])
    assert data.recal_images == 8 and data.holdout_images == 4
    assert data.recal[0].is_contiguous(memory_format=torch.channels_last)


def test_default_recal_budget_scales_the_papers():
    assert default_recal_images(1_231_167) == 25_600
    assert default_recal_images(54_000) == 1123
    assert default_recal_images(1000) == 512 and default_recal_images(300) == 300


def test_held_out_subset_keeps_the_class_mix_of_a_class_sorted_folder(tmp_path):
    """ImageFolder lists files class by class; scoring the first N held-out images would score
    the first classes only. The scored subset must have the held-out split's class histogram."""
    from PIL import Image

    import spos_hw
    from spos_hw.nas.checkpoint import data_for_checkpoint, load_supernet
    from spos_hw.nas.recalibrate import scorer_for_checkpoint

    rng = np.random.default_rng(0)
    for c in range(5):
        (tmp_path / "tree" / "train" / f"class{c}").mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "tree" / "train" / f"class{c}" / f"{i}.png")
    space = "shufflenetv2-small:classes=5,size=8"
    spos_hw.train_supernet(
        space=space,
        data=str(tmp_path / "tree"),
        steps=1,
        batch_size=16,
        holdout=50,
        threads=1,
        out=str(tmp_path / "s.pt"),
        progress=False,
    )
    net, ckpt = load_supernet(tmp_path / "s.pt")
    data, split = data_for_checkpoint(ckpt, net.space)
    labels = data.train.labels
    assert (np.diff(labels) >= 0).all()  # the folder really is class-sorted
    held = np.bincount(labels[split.holdout], minlength=5)
    scorer, info = scorer_for_checkpoint(net, ckpt, holdout=20, recal_images=32)
    scored = np.bincount(torch.cat([y for _, y in scorer.data.holdout]).numpy(), minlength=5)
    assert scored.sum() == 20 and info["holdout_subset"] == "stratified"
    assert np.abs(scored - 20 * held / held.sum()).max() <= 1.0, (scored, held)  # stratified: within one image per class


@pytest.mark.parametrize("name", ["shufflenetv2-small-ch:size=8", "fbnet-small:size=16", "resnet18-mixed:size=8"])
def test_scoring_through_the_folded_path_is_the_same_function(name):
    """BN folded into the convs of the cut-out path: the same scores as the supernet path (float
    rounding aside), for sliced widths and grouped convs; quantized spaces are never folded."""
    space = get_space(name)
    torch.manual_seed(0)
    nets = [Supernet(space), None]
    nets[1] = copy.deepcopy(nets[0])
    g = torch.Generator().manual_seed(1)
    recal = [torch.randn(32, *space.input_shape, generator=g) for _ in range(2)]
    hold = [(torch.randn(64, *space.input_shape, generator=g), torch.randint(0, space.num_classes, (64,), generator=g))]
    fused, plain = (SupernetScorer(n, ScoringData.build(recal, hold), fuse=f) for n, f in zip(nets, (True, False)))
    assert fused.fuse == (not space.quantized) and not plain.fuse
    state = torch.get_rng_state()
    for row in space.sample(np.random.default_rng(2), 4):
        a, b = fused.evaluate(row), plain.evaluate(row)
        assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    assert torch.equal(torch.get_rng_state(), state)  # cutting out the path draws nothing from the caller's RNG
