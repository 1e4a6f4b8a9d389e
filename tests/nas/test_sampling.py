"""Uniform and uniform-constrained sampling: exactness of the DP sampler, bounds, resume."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from spos_hw.errors import Infeasible, SpaceError
from spos_hw.nas.costs import Bound, builtin_costs, pick_cost
from spos_hw.nas.sampling import AdditiveGrid, ConstrainedSampler, UniformSampler, make_path_sampler
from spos_hw.nas.space import Stage
from spos_hw.nas.spaces import get_space
from spos_hw.nas.spaces.shufflenetv2 import OPS, ShuffleNetV2Space
from tests.support.spaces import all_op_archs


@pytest.fixture(scope="module")
def small():
    return get_space("shufflenetv2-small")


@pytest.fixture(scope="module")
def tiny():
    """4 blocks x 4 ops = 256 architectures: small enough to enumerate."""
    return ShuffleNetV2Space(
        name="tiny",
        input_shape=(1, 16, 16),
        num_classes=10,
        ops=OPS,
        stem_channels=8,
        stages=(Stage(2, 16), Stage(2, 32)),
        head_channels=0,
    )


class OpaqueCost:
    """A cost model that is not additive as far as the sampler can tell (only ``cost``)."""

    name, unit = "opaque", "u"

    def __init__(self, inner):
        self.inner = inner

    def cost(self, batch):
        return self.inner.cost(batch)


def _roundtrip(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_uniform_sampler_resumes_its_stream(small):
    s = UniformSampler(small, rng=np.random.default_rng(3))
    s.sample(5)
    state = _roundtrip(s.state_dict())  # PCG64's 128-bit ints survive weights_only loading
    expect = s.sample(4)
    t = UniformSampler(small, rng=np.random.default_rng(99))
    t.load_state_dict(state)
    np.testing.assert_array_equal(t.sample(4), expect)
    assert expect.shape == (4, small.num_blocks, 4) and expect[..., 1:].max() == 0


def test_constraint_validation_and_infeasible_ranges(small):
    with pytest.raises(SpaceError, match="LO <= HI"):
        Bound(small.flops, 5e6, 4e6)
    lo, hi = small.flops.bounds()
    with pytest.raises(Infeasible, match=r"outside the achievable range 4\.001M\.\.6\.578M FLOPs"):
        ConstrainedSampler(small, [Bound.scaled(small.flops, 1, 2)], rng=np.random.default_rng(0))
    with pytest.raises(SpaceError, match="bins"):
        ConstrainedSampler(small, [Bound(small.flops, lo, hi)], rng=np.random.default_rng(0), bins=0)
    with pytest.raises(SpaceError, match="exact sampling needs an additive"):
        ConstrainedSampler(small, [Bound(OpaqueCost(small.flops), lo, hi)], rng=np.random.default_rng(0), method="exact")


def test_grid_counts_match_enumeration(tiny):
    model = tiny.flops
    allb = np.array(list(itertools.product(range(4), repeat=tiny.num_blocks)))
    batch = np.zeros((len(allb), tiny.num_blocks, 4), dtype=np.int64)
    batch[..., 0] = allb
    costs = model.cost(batch)
    grid = AdditiveGrid(model, tiny, delta=(costs.max() - costs.min()) / 50)
    assert grid.count(costs.min(), costs.max()) == len(allb)  # the whole range covers every arch
    lo, hi = np.quantile(costs, [0.4, 0.5])
    assert grid.count(lo, hi) >= np.count_nonzero((costs >= lo) & (costs <= hi))  # a superset of the bin


def test_exact_is_uniform_within_a_bin(tiny):
    """Every architecture of a bin is drawn equally often (goodness of fit over all of them)."""
    model = tiny.flops
    allb = np.array(list(itertools.product(range(4), repeat=tiny.num_blocks)))
    batch = np.zeros((len(allb), tiny.num_blocks, 4), dtype=np.int64)
    batch[..., 0] = allb
    costs = model.cost(batch)
    lo, hi = np.quantile(costs, [0.3, 0.6])
    members = {tuple(r) for r, c in zip(allb, costs) if lo <= c <= hi}
    s = ConstrainedSampler(tiny, [Bound(model, lo, hi)], rng=np.random.default_rng(1), bins=1, method="exact")
    draws = s.sample(40 * len(members))
    keys = [tuple(r) for r in draws[..., 0]]
    assert set(keys) <= members
    counts = np.array([keys.count(m) for m in sorted(members)])
    assert chisquare(counts).pvalue > 1e-3


def test_exact_marginals_match_rejection(small):
    """Per-block op frequencies of the DP sampler and the paper's rejection loop agree."""
    lo, hi = small.flops.bounds()
    con = Bound(small.flops, lo + 0.30 * (hi - lo), lo + 0.40 * (hi - lo))
    exact = ConstrainedSampler(small, [con], rng=np.random.default_rng(2), bins=1, method="exact").sample(3000)
    rej = ConstrainedSampler(small, [con], rng=np.random.default_rng(3), bins=1, method="rejection").sample(3000)
    assert con.admits(exact).all() and con.admits(rej).all()
    pvals = []
    for b in range(small.num_blocks):
        table = np.stack([np.bincount(exact[:, b, 0], minlength=4), np.bincount(rej[:, b, 0], minlength=4)])
        pvals.append(chi2_contingency(table).pvalue)
    assert min(pvals) > 1e-3 / small.num_blocks  # Bonferroni over blocks
    # the test has power: the bin's marginals are far from the unconstrained ones
    uniform = small.sample(np.random.default_rng(0), 3000)
    worst = min(
        chi2_contingency(np.stack([np.bincount(exact[:, b, 0], minlength=4), np.bincount(uniform[:, b, 0], minlength=4)])).pvalue
        for b in range(small.num_blocks)
    )
    assert worst < 1e-9


def test_bins_are_chosen_uniformly(small):
    lo, hi = small.flops.bounds()
    s = ConstrainedSampler(small, [Bound(small.flops, lo, hi)], rng=np.random.default_rng(4), bins=7)
    costs = small.flops.cost(s.sample(2100))
    counts, _ = np.histogram(costs, bins=s.edges)
    assert chisquare(counts).pvalue > 1e-3


def test_narrow_extreme_bin_needs_no_long_rejection_loop(small):
    lo, hi = small.flops.bounds()
    narrow = Bound(small.flops, lo, lo + 0.02 * (hi - lo))  # near the all-cheapest corner
    with pytest.raises(Infeasible, match=r"bin 1/1 .* after 2000 proposals"):
        ConstrainedSampler(small, [narrow], rng=np.random.default_rng(5), bins=1, method="rejection", max_tries=2000).sample(1)
    s = ConstrainedSampler(small, [narrow], rng=np.random.default_rng(5), bins=1, max_tries=20)
    assert s.method == "exact" and narrow.admits(s.sample(200)).all()


def test_several_constraints_and_opaque_models(small):
    lo, hi = small.flops.bounds()
    plo, phi = small.params.bounds()
    cons = [Bound(small.flops, lo, lo + 0.6 * (hi - lo)), Bound(small.params, plo, plo + 0.5 * (phi - plo))]
    s = make_path_sampler(small, cons, rng=np.random.default_rng(6))
    out = s.sample(300)
    assert all(c.admits(out).all() for c in cons)
    mid = Bound(OpaqueCost(small.flops), lo + 0.4 * (hi - lo), lo + 0.6 * (hi - lo))  # the paper's loop copes here
    opaque = ConstrainedSampler(small, [mid], rng=np.random.default_rng(7), bins=2)
    assert opaque.method == "rejection" and mid.admits(opaque.sample(50)).all()


def test_constrained_state_resumes_and_channel_space(small):
    space = get_space("shufflenetv2-small-ch")
    lo, hi = space.flops.bounds()

    def mk(seed):
        return ConstrainedSampler(space, [Bound(space.flops, lo + 0.2 * (hi - lo), hi)], rng=np.random.default_rng(seed))

    a = mk(8)
    a.sample(3)
    state = _roundtrip(a.state_dict())
    expect = a.sample(5)
    b = mk(0)
    b.load_state_dict(state)
    np.testing.assert_array_equal(b.sample(5), expect)
    assert expect[..., 1].max() > 0  # channel choices are sampled too
    space.check_batch(expect)


def test_cost_model_lookup(small):
    assert pick_cost(builtin_costs(small), "params") is small.params
    with pytest.raises(SpaceError, match="needs a latency table"):
        pick_cost(builtin_costs(small), "latency")
    with pytest.raises(SpaceError, match="unknown cost model"):
        pick_cost(builtin_costs(small), "watts")


def test_latency_constraint_goes_through_the_predictor_hook(small, monkeypatch):
    """``--constraint latency`` loads ``spos_hw.latency.predictor.load_predictor(lut, space)`` lazily (in the api)."""
    import sys
    import types

    from spos_hw.api import cost_models
    from spos_hw.errors import MissingDependency
    from spos_hw.nas.space import AdditiveCost

    monkeypatch.setitem(sys.modules, "spos_hw.latency.predictor", None)  # not installed
    with pytest.raises(MissingDependency, match="latency predictor"):
        cost_models(small, "lut.json")
    calls = []

    def load_predictor(path, space):
        calls.append((path, space.name))
        f = space.flops
        return AdditiveCost("latency", "ms", 0.2 + f.fixed * 1e-7, f.table * 1e-7, scale=1.0)

    monkeypatch.setitem(sys.modules, "spos_hw.latency.predictor", types.SimpleNamespace(load_predictor=load_predictor))
    model = cost_models(small, "lut.json")["latency"]
    assert calls == [("lut.json", small.name)]
    lo, hi = model.bounds()
    s = make_path_sampler(small, [Bound.scaled(model, lo, (lo + hi) / 2)], rng=np.random.default_rng(0))
    assert s.method == "exact" and (model.cost(s.sample(20)) <= (lo + hi) / 2).all()
    assert "ms" in Bound(model, lo, hi).describe()


def test_bins_empty_under_every_constraint_are_left_out_before_training(small):
    """A bin that holds architectures of the first constraint but none meeting the others used to
    fail mid-training (and again after --resume); now it is found and skipped up front."""
    lo, hi = small.flops.bounds()
    plo, phi = small.params.bounds()
    cheap = Bound(small.params, plo, plo + 0.05 * (phi - plo))  # only near-cheapest architectures
    s = ConstrainedSampler(small, [Bound(small.flops, lo, hi), cheap], rng=np.random.default_rng(3), bins=7)
    assert 0 < len(s.live_bins) < 7 and s.describe()["live_bins"] == s.live_bins
    rows = s.sample(300)  # every bin drawn from is feasible: no Infeasible in the middle of a run
    assert cheap.admits(rows).all() and (small.flops.cost(rows) >= lo).all()
    again = ConstrainedSampler(small, [Bound(small.flops, lo, hi), cheap], rng=np.random.default_rng(3), bins=7)
    np.testing.assert_array_equal(
        again.sample(5),
        ConstrainedSampler(small, [Bound(small.flops, lo, hi), cheap], rng=np.random.default_rng(3), bins=7).sample(5),
    )
    with pytest.raises(Infeasible, match="at once"):
        ConstrainedSampler(small, [Bound(small.flops, lo + 0.9 * (hi - lo), hi), cheap], rng=np.random.default_rng(0), bins=3)


def test_exact_is_uniform_within_a_bin_over_ops_and_channels():
    """Goodness of fit over every (op, channel) architecture of a bin, with draws enough to catch a
    10% bias (checked: the same number of draws from a 10%-biased distribution is rejected)."""
    space = ShuffleNetV2Space(
        name="tiny-ch",
        input_shape=(1, 16, 16),
        num_classes=10,
        ops=("shuffle3x3", "shuffle7x7"),
        channel_scales=(0.5, 1.0),
        stem_channels=8,
        stages=(Stage(2, 16), Stage(2, 32)),
        head_channels=0,
    )
    choices = list(itertools.product(range(2), range(2)))  # (op, ch) per block
    allb = np.zeros((len(choices) ** space.num_blocks, space.num_blocks, 4), dtype=np.int64)
    for i, combo in enumerate(itertools.product(choices, repeat=space.num_blocks)):
        allb[i, :, :2] = combo
    costs = space.flops.cost(allb)
    lo, hi = np.quantile(costs, [0.3, 0.6])
    members = allb[(costs >= lo) & (costs <= hi)]
    index = {r.tobytes(): i for i, r in enumerate(members)}
    s = ConstrainedSampler(space, [Bound(space.flops, lo, hi)], rng=np.random.default_rng(7), bins=1, method="exact")
    n = 150 * len(members)
    draws = s.sample(n)
    counts = np.bincount([index[r.tobytes()] for r in draws], minlength=len(members))  # KeyError: outside the bin
    assert (counts > 0).all() and draws[..., 1].max() == 1  # channels are drawn too
    assert chisquare(counts).pvalue > 1e-3
    bias = np.where(np.arange(len(members)) % 2 == 0, 1.1, 0.9)
    biased = np.random.default_rng(8).multinomial(n, bias / bias.sum())
    assert chisquare(biased).pvalue < 1e-3  # the test has the power to see a 10% bias


def test_exact_in_bin_sampling_with_skip_is_uniform(tiny_mbconv):
    """The DP sampler counts only allowed choices and draws every member of a bin equally often."""
    tiny = tiny_mbconv
    batch = all_op_archs(tiny)
    costs = tiny.flops.cost(batch)
    grid = AdditiveGrid(tiny.flops, tiny, delta=(costs.max() - costs.min()) / 40)
    assert grid.count(costs.min(), costs.max()) == len(batch)
    lo, hi = np.quantile(costs, [0.3, 0.6])
    members = {tuple(r) for r, c in zip(batch[..., 0], costs) if lo <= c <= hi}
    s = ConstrainedSampler(tiny, [Bound(tiny.flops, lo, hi)], rng=np.random.default_rng(1), bins=1, method="exact")
    draws = s.sample(40 * len(members))
    tiny.check_batch(draws)
    keys = [tuple(r) for r in draws[..., 0]]
    assert set(keys) <= members
    assert chisquare([keys.count(m) for m in sorted(members)]).pvalue > 1e-3


def test_exact_sampling_in_fbnet_small_bins():
    space = get_space("fbnet-small")
    lo, hi = space.flops.bounds()
    s = ConstrainedSampler(space, [Bound(space.flops, lo, lo + 0.1 * (hi - lo))], rng=np.random.default_rng(2), method="exact")
    draws = s.sample(200)
    space.check_batch(draws)
    assert (space.flops.cost(draws) <= lo + 0.1 * (hi - lo)).all()
    assert (draws[..., 0] == 8).any()  # skips are drawn, at allowed blocks only
