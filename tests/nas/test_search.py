"""The search driver with toy scorers: artifacts, Pareto fronts, resume after a crash, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spos_hw.errors import ArtifactMismatch, Infeasible, OutputError, SpaceError
from spos_hw.nas.costs import Bound, admits_all
from spos_hw.nas.pareto import pareto_front
from spos_hw.nas.search import report_search, run_search
from spos_hw.nas.spaces import get_space
from spos_hw.nas.strategy import EvolutionSearch, RandomSearch

SPACE = get_space("shufflenetv2-small")
COSTS = {"flops": SPACE.flops, "params": SPACE.params, "bitops": SPACE.bitops}
OPTS = dict(population=10, topk=3, mutations=4, crossovers=4, generations=4)
TARGET = np.random.default_rng(11).integers(0, 4, SPACE.num_blocks)


def score(batch):
    """Toy accuracy: matching ops, plus a little for FLOPs (so the front is non-trivial)."""
    batch = np.asarray(batch)
    return (batch[..., 0] == TARGET).mean(axis=-1) + 0.01 * SPACE.flops.cost(batch) / 1e7


def budgets():
    lo, hi = SPACE.flops.bounds()
    plo, phi = SPACE.params.bounds()
    return [Bound.upper(SPACE.flops, lo + 0.6 * (hi - lo)), Bound.upper(SPACE.params, plo + 0.7 * (phi - plo))]


def strategy(seed=0, cls=EvolutionSearch, **kw):
    opts = {**OPTS, **kw} if cls is EvolutionSearch else kw
    return cls(SPACE, budgets(), rng=np.random.default_rng(seed), **opts)


META = {"seed": 0, "config": {"seed": 0, "what": "toy"}}


def test_artifacts(tmp_path):
    res = run_search(strategy(), score, costs=COSTS, out=tmp_path, meta=META)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["history.json", "pareto.json", "pareto_flops.png", "pareto_params.png", "result.json", "state.json"]
    result = json.loads((tmp_path / "result.json").read_text())
    hist = json.loads((tmp_path / "history.json").read_text())["entries"]
    assert len(hist) == res.evaluated == result["evaluated"] == 40
    best = max(hist, key=lambda e: e["score"])
    assert result["accuracy"] == best["score"] and result["arch"] == best["arch"]
    assert result["arch_json"] == SPACE.arch(result["arch"]).to_json()
    row = SPACE.arch(result["arch"]).to_array()
    assert result["flops"] == int(SPACE.flops.cost(row)) and result["params"] == int(SPACE.params.cost(row))
    assert result["bitops"] == int(SPACE.bitops.cost(row))
    assert [b["cost"] for b in result["budgets"]] == ["flops", "params"] and all(b["met"] for b in result["budgets"])
    assert result["config"] == META["config"] and result["fingerprint"] == SPACE.fingerprint
    batch = SPACE.encode(SPACE.arch(e["arch"]) for e in hist)
    assert admits_all(budgets(), batch).all()
    assert {e["origin"] for e in hist} >= {"random", "mutation", "crossover"}
    fronts = json.loads((tmp_path / "pareto.json").read_text())["fronts"]
    for cost in ("flops", "params"):
        front = fronts[cost]
        assert [e["costs"][cost] for e in front] == sorted(e["costs"][cost] for e in front)
        for e in hist:  # nothing dominates a front point
            for f in front:
                assert not (e["costs"][cost] <= f["costs"][cost] and e["score"] > f["score"])
    assert (tmp_path / "pareto_flops.png").read_bytes()[:4] == b"\x89PNG"


def test_pareto_front_small_cases():
    assert list(pareto_front([0.5, 0.7, 0.6, 0.7], [1.0, 2.0, 1.5, 3.0])) == [0, 2, 1]
    assert list(pareto_front([0.9, 0.9], [2.0, 2.0])) == [0]
    assert list(pareto_front([], [])) == []


class Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_and_loses_no_work(tmp_path):
    full = run_search(strategy(seed=3), score, costs=COSTS, out=tmp_path / "full", meta=META, plots=False)
    calls = []

    def crashing(batch):
        calls.append(1)
        if len(calls) == 17:  # in the middle of generation 1
            raise Crash
        return score(batch)

    with pytest.raises(Crash):
        run_search(strategy(seed=3), crashing, costs=COSTS, out=tmp_path / "cut", meta=META, checkpoint_s=0, plots=False)
    state = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert state["strategy"]["generation"] == 1 and len(state["pending"]["scores"]) == 6
    with pytest.raises(OutputError, match="--resume"):
        run_search(strategy(seed=3), score, costs=COSTS, out=tmp_path / "cut", meta=META)
    later = []

    def counting(batch):
        later.append(1)
        return score(batch)

    resumed = run_search(strategy(seed=3), counting, costs=COSTS, out=tmp_path / "cut", meta=META, resume=True, plots=False)
    assert len(calls) - 1 + len(later) == full.evaluated  # nothing scored twice
    assert [(e["arch"], e["score"], e["origin"]) for e in resumed.entries] == [
        (e["arch"], e["score"], e["origin"]) for e in full.entries
    ]
    a = json.loads((tmp_path / "full" / "result.json").read_text())
    b = json.loads((tmp_path / "cut" / "result.json").read_text())
    assert a["arch"] == b["arch"] and a["accuracy"] == b["accuracy"]


def test_resume_refuses_another_config_and_overwrite_replaces(tmp_path):
    run_search(strategy(), score, costs=COSTS, out=tmp_path, meta=META, plots=False)
    with pytest.raises(OutputError, match="already exists"):
        run_search(strategy(), score, costs=COSTS, out=tmp_path, meta=META)
    with pytest.raises(ArtifactMismatch, match="seed=0"):
        run_search(strategy(), score, costs=COSTS, out=tmp_path, meta={"config": {"seed": 1, "what": "toy"}}, resume=True)
    res = run_search(
        strategy(seed=9, cls=RandomSearch, population=7, generations=2),
        score,
        costs=COSTS,
        out=tmp_path,
        meta=META,
        overwrite=True,
        plots=False,
    )
    assert json.loads((tmp_path / "result.json").read_text())["evaluated"] == res.evaluated == 14


def test_resume_of_finished_search_rescored_nothing(tmp_path):
    first = run_search(strategy(), score, costs=COSTS, out=tmp_path, meta=META, plots=False)

    def never(batch):
        raise AssertionError("a finished search must not score again")

    again = run_search(strategy(), never, costs=COSTS, out=tmp_path, meta=META, resume=True, plots=False)
    assert again.best == first.best


def test_report_repicks_for_other_budgets_without_scoring(tmp_path):
    res = run_search(strategy(), score, costs=COSTS, out=tmp_path, meta=META, plots=False)
    flops = np.array([e["costs"]["flops"] for e in res.entries])
    limit = float(np.median(flops))
    rep = report_search(tmp_path, {"flops": limit / 1e6})
    ok = [e for e in res.entries if e["costs"]["flops"] <= limit]
    assert rep["accuracy"] == max(e["score"] for e in ok) and rep["flops"] <= limit
    assert rep["candidates"] == 40 and rep["budgets"][0]["met"]
    # a budget kind the search did not constrain: costs are recomputed from the archs
    bit = report_search(tmp_path, {"bitops": float(np.median([e["costs"]["bitops"] for e in res.entries])) / 1e9})
    assert bit["bitops"] <= float(np.median([e["costs"]["bitops"] for e in res.entries]))
    with pytest.raises(Infeasible, match="cheapest evaluated: flops"):
        report_search(tmp_path, {"flops": float(flops.min()) / 1e6 * 0.999})
    with pytest.raises(SpaceError, match="at least one budget"):
        report_search(tmp_path, {"flops": None})
    with pytest.raises(SpaceError, match="--lut"):
        report_search(tmp_path, {"latency": 1.0})


def test_resume_with_more_generations_extends_exactly(tmp_path):
    long = run_search(strategy(seed=4, generations=5), score, costs=COSTS, out=tmp_path / "long", meta=META, plots=False)
    run_search(strategy(seed=4, generations=2), score, costs=COSTS, out=tmp_path / "short", meta=META, plots=False)
    more = run_search(
        strategy(seed=4, generations=5), score, costs=COSTS, out=tmp_path / "short", meta=META, resume=True, plots=False
    )
    assert more.entries == long.entries and more.best == long.best
