"""Search strategies on toy scorers: budgets, operators, caching, resume, infeasible budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spos_hw.errors import Infeasible, SpaceError
from spos_hw.nas.costs import Bound, admits_all, check_budgets
from spos_hw.nas.space import AdditiveCost
from spos_hw.nas.spaces import get_space
from spos_hw.nas.strategy import EvolutionSearch, RandomSearch, make_strategy

SPACE = get_space("shufflenetv2-small")
CH_SPACE = get_space("shufflenetv2-small-ch")


def _median_budget(space, model=None):
    model = model or space.flops
    lo, hi = model.bounds()
    return Bound.upper(model, (lo + hi) / 2)


def _target(space, budget, seed=5):
    """A feasible arch to look for: the toy score is the share of blocks whose choices match it."""
    rng = np.random.default_rng(seed)
    for _ in range(100):
        t = space.sample(rng, 64)
        ok = np.flatnonzero(admits_all([budget], t))
        if ok.size:
            return t[ok[0]]
    raise AssertionError("no feasible target")


def _toy(target):
    def score(batch):
        return (np.asarray(batch) == target).all(axis=-1).mean(axis=-1)

    return score


def _run(strategy, scorer):
    calls = []
    while not strategy.done:
        batch, origins = strategy.propose()
        if not len(batch):
            break
        calls.append(len(batch))
        strategy.tell(batch, scorer(batch), origins)
    return calls


def test_evolution_beats_random_at_equal_budget():
    budget = _median_budget(SPACE)
    target = _toy(_target(SPACE, budget))
    evo = EvolutionSearch(SPACE, [budget], rng=np.random.default_rng(0))
    rnd = RandomSearch(SPACE, [budget], rng=np.random.default_rng(0))
    _run(evo, target), _run(rnd, target)
    assert evo.evaluated == rnd.evaluated == 1000  # the paper's 20 x 50
    assert evo.best()["score"] >= 0.9
    assert rnd.best()["score"] <= 0.7
    assert evo.best()["score"] > rnd.best()["score"]


def test_generation_makeup_and_budgets():
    budget = _median_budget(SPACE)
    evo = EvolutionSearch(SPACE, [budget], rng=np.random.default_rng(1))
    scorer = _toy(_target(SPACE, budget))
    batch, origins = evo.propose()
    assert len(batch) == 50 and set(origins) == {"random"}
    evo.tell(batch, scorer(batch), origins)
    batch, origins = evo.propose()
    assert origins.count("mutation") == 25 and origins.count("crossover") == 25
    assert admits_all([budget], batch).all()
    keys = [evo.key(r) for r in batch]
    assert len(set(keys)) == len(keys) and not any(k in evo for k in keys)


def test_operators_change_blocks_as_specified():
    evo = EvolutionSearch(CH_SPACE, [_median_budget(CH_SPACE)], rng=np.random.default_rng(2), mutation_prob=0.1)
    parents = CH_SPACE.sample(np.random.default_rng(3), 2)
    kids = evo.mutate(parents[:1], 4000)
    changed = (kids != parents[0]).any(axis=-1)  # per block
    # a redrawn block keeps its value with prob 1/32 (4 ops x 8 channel scales): 0.1 * 31/32 change
    assert abs(changed.mean() - 0.1 * 31 / 32) < 0.01
    both = (kids[..., 0] != parents[0, :, 0]) & (kids[..., 1] != parents[0, :, 1])
    assert both.any(), "a mutation redraws every searched dimension of a block at once"
    kids = evo.crossover(parents, 2000)
    from_a = (kids == parents[0]).all(axis=-1)
    from_b = (kids == parents[1]).all(axis=-1)
    assert (from_a | from_b).all()  # blocks are taken whole from a parent
    differ = (parents[0] != parents[1]).any(axis=-1)
    assert abs(from_a[:, differ].mean() - 0.5) < 0.03


def test_cache_never_rescores():
    budget = _median_budget(SPACE)
    evo = EvolutionSearch(
        SPACE, [budget], rng=np.random.default_rng(4), population=20, topk=3, mutations=8, crossovers=8, generations=15
    )
    seen: list[str] = []
    base = _toy(_target(SPACE, budget))

    def scorer(batch):
        seen.extend(evo.key(r) for r in batch)
        return base(batch)

    _run(evo, scorer)
    assert len(seen) == len(set(seen)) == evo.evaluated


def test_state_dict_round_trip_through_json():
    budget = _median_budget(SPACE)
    scorer = _toy(_target(SPACE, budget))
    opts = dict(population=12, topk=4, mutations=5, crossovers=5, generations=6)
    full = EvolutionSearch(SPACE, [budget], rng=np.random.default_rng(7), **opts)
    _run(full, scorer)
    part = EvolutionSearch(SPACE, [budget], rng=np.random.default_rng(7), **opts)
    for _ in range(3):
        b, o = part.propose()
        part.tell(b, scorer(b), o)
    state = json.loads(json.dumps(part.state_dict()))
    assert isinstance(state["rng"]["state"]["state"]["int"], str)  # 128-bit PCG64 ints as strings
    resumed = EvolutionSearch(SPACE, [budget], rng=np.random.default_rng(999), **opts)
    resumed.load_state_dict(state)
    _run(resumed, scorer)
    assert resumed.history == full.history


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"population": 0}, "population"),
        ({"topk": -1}, "topk"),
        ({"mutations": 30, "crossovers": 30}, "cannot exceed"),
        ({"mutation_prob": 0.0}, "mutation_prob"),
        ({"mutation_prob": 1.5}, "mutation_prob"),
        ({"generations": 2.5}, "generations"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_bad_options(kwargs, needle):
    with pytest.raises(SpaceError, match=needle):
        make_strategy("evolution", SPACE, [_median_budget(SPACE)], rng=np.random.default_rng(0), **kwargs)


def test_defaults_are_the_papers_and_scale_with_the_population():
    evo = EvolutionSearch(SPACE, [_median_budget(SPACE)], rng=np.random.default_rng(0))
    assert (evo.population, evo.topk, evo.mutations, evo.crossovers, evo.generations, evo.mutation_prob) == (
        50,
        10,
        25,
        25,
        20,
        0.1,
    )
    small = EvolutionSearch(SPACE, [_median_budget(SPACE)], rng=np.random.default_rng(0), population=12)
    assert (small.topk, small.mutations, small.crossovers) == (2, 6, 6)


def test_options_are_keyword_only_and_strategy_named():
    with pytest.raises(TypeError):
        EvolutionSearch(SPACE, [_median_budget(SPACE)], np.random.default_rng(0))  # type: ignore[misc]
    with pytest.raises(SpaceError, match="unknown search strategy"):
        make_strategy("annealing", SPACE, [_median_budget(SPACE)], rng=np.random.default_rng(0))
    with pytest.raises(SpaceError, match="positive"):
        Bound.upper(SPACE.flops, -1.0)


def test_budget_below_minimum_fails_at_once_with_the_minimum():
    lo, _ = SPACE.flops.bounds()
    with pytest.raises(Infeasible, match=f"achievable minimum is {lo / 1e6:.6g}M FLOPs"):
        EvolutionSearch(SPACE, [Bound.upper(SPACE.flops, lo * 0.99)], rng=np.random.default_rng(0))


def _anti_flops(space):
    """A cost that falls as FLOPs rise: both budgets near their minima cannot hold together."""
    t = space.flops.table
    return AdditiveCost("anti", "units", 0.0, t.max(axis=(1, 2, 3, 4), keepdims=True) - t)


def test_jointly_infeasible_budgets_are_proved_at_once():
    anti = _anti_flops(SPACE)
    lo_f, hi_f = SPACE.flops.bounds()
    lo_a, hi_a = anti.bounds()
    budgets = [Bound.upper(SPACE.flops, lo_f + 0.1 * (hi_f - lo_f)), Bound.upper(anti, lo_a + 0.1 * (hi_a - lo_a))]
    with pytest.raises(Infeasible, match="at once"):
        check_budgets(SPACE, budgets)
    # feasible only in the middle (no weighted-sum minimizer lands there): not refused, and sampling finds it
    loose = [Bound.upper(SPACE.flops, lo_f + 0.6 * (hi_f - lo_f)), Bound.upper(anti, lo_a + 0.6 * (hi_a - lo_a))]
    rnd = RandomSearch(SPACE, loose, rng=np.random.default_rng(0), population=5, generations=1)
    batch, _ = rnd.propose()
    assert len(batch) == 5 and admits_all(loose, batch).all()
    # correlated budgets: the minimizers are witnesses that meet both
    both = [Bound.upper(SPACE.flops, lo_f * 1.05), Bound.upper(SPACE.params, SPACE.params.bounds()[0] * 1.05)]
    witnesses = check_budgets(SPACE, both)
    assert len(witnesses) and admits_all(both, witnesses).all()


def test_random_search_matches_evolution_count_and_stays_in_budget():
    budget = _median_budget(SPACE, SPACE.params)
    rnd = RandomSearch(SPACE, [budget], rng=np.random.default_rng(3), population=30, generations=4)
    calls = _run(rnd, _toy(_target(SPACE, budget)))
    assert calls == [30] * 4
    rows = SPACE.encode(SPACE.arch(h["arch"]) for h in rnd.history)
    assert admits_all([budget], rows).all()
    assert {h["origin"] for h in rnd.history} == {"random"}


def test_mixed_precision_space_under_bitops_and_flops():
    space = get_space("resnet18-mixed")
    lo, hi = space.bitops.bounds()
    budgets = [Bound.upper(space.bitops, lo + 0.3 * (hi - lo)), _median_budget(space)]
    evo = EvolutionSearch(space, budgets, rng=np.random.default_rng(0), population=20, generations=4)
    target = _target(space, budgets[0])
    _run(evo, _toy(target))
    rows = space.encode(space.arch(h["arch"]) for h in evo.history)
    assert evo.evaluated == 80 and admits_all(budgets, rows).all()
    assert all(len(np.unique(rows[..., d])) > 1 for d in (1, 2, 3))  # channels, weight and activation bits all vary
    with pytest.raises(Infeasible, match=r"achievable minimum is .*G BitOps"):
        EvolutionSearch(space, [Bound.upper(space.bitops, lo * 0.5)], rng=np.random.default_rng(0))


def test_budgets_and_mutations_respect_the_mask():
    space = get_space("fbnet-small")
    lo = space.flops.bounds()[0]
    with pytest.raises(Infeasible, match=r"the achievable minimum is 1\.91667M FLOPs"):
        check_budgets(space, [Bound.upper(space.flops, 0.99 * lo)])
    witnesses = check_budgets(space, [Bound.upper(space.flops, 1.001 * lo), Bound.upper(space.params, 1e9)])
    assert len(witnesses) and space.check_batch(witnesses) is not None
    search = EvolutionSearch(
        space, [Bound.scaled(space.flops, None, 8)], rng=np.random.default_rng(0), population=20, generations=3
    )
    batch, origins = search.propose()
    search.tell(batch, np.arange(len(batch), dtype=float), origins)
    children = search.mutate(batch, 500)
    space.check_batch(children)
    batch, origins = search.propose()
    space.check_batch(batch)
    assert "mutation" in origins
