"""The rank check: its statistics, its plan, resuming its units, and search reading its result."""

from __future__ import annotations

import json

import numpy as np
import pytest

import spos_hw
from spos_hw.errors import ArtifactMismatch, ConfigError
from spos_hw.nas import rank_check as rc

SPACE = "shufflenetv2-small:size=8"
TINY = dict(archs=4, repeated=3, seeds=2, steps=2, batch_size=16, recal_images=32, holdout=40, threads=1, resamples=200)


def test_rank_agreement_on_known_rankings():
    x = np.arange(10.0)
    same = rc.rank_agreement(x, x * 2 + 1, resamples=300)
    assert same["tau"] == pytest.approx(1.0) and same["rho"] == pytest.approx(1.0) and same["top5_hit"] == 1.0
    assert same["tau_ci"] == [pytest.approx(1.0), pytest.approx(1.0)]
    rev = rc.rank_agreement(x, -x, resamples=300)
    assert rev["tau"] == pytest.approx(-1.0) and rev["top5_hit"] == 0.0
    noise = rc.rank_agreement(np.random.default_rng(0).random(40), np.random.default_rng(1).random(40), resamples=500)
    lo, hi = noise["tau_ci"]
    assert lo < noise["tau"] < hi and lo < 0.0 < hi  # independent rankings: the CI covers 0
    assert rc.null_tau_sd(10) == pytest.approx(0.25, abs=0.01) and rc.null_tau_sd(30) == pytest.approx(0.13, abs=0.01)


def test_config_validation():
    with pytest.raises(ConfigError, match="--archs"):
        spos_hw.RankCheckConfig(supernet="s.pt", archs=2)
    with pytest.raises(ConfigError, match="--repeated"):
        spos_hw.RankCheckConfig(supernet="s.pt", archs=5, repeated=6)
    with pytest.raises(ConfigError, match="--lut"):
        spos_hw.RankCheckConfig(supernet="s.pt", stratify="latency")
    assert spos_hw.RankCheckConfig(supernet="s.pt").epochs == 0.5


@pytest.fixture(scope="module")
def supernets(tmp_path_factory):
    d = tmp_path_factory.mktemp("rank")
    for name, seed in (("a", 0), ("b", 1), ("c", 2)):
        spos_hw.train_supernet(
            space=SPACE,
            data="digits",
            steps=2,
            batch_size=16,
            holdout=0.2,
            threads=1,
            seed=seed,
            out=str(d / f"{name}.pt"),
            progress=False,
        )
    return d


def test_rank_check_end_to_end_resume_and_reuse(supernets, tmp_path, monkeypatch):
    from spos_hw.nas import runs

    calls = []
    real = runs.retrain
    monkeypatch.setattr(runs, "retrain", lambda cfg, **kw: calls.append(cfg.seed) or real(cfg, **kw))
    out = tmp_path / "rc"
    r = spos_hw.rank_check(supernet=str(supernets / "a.pt"), out=str(out), progress=False, **TINY)
    assert len(calls) == 4 + 3  # every arch once, the repeated ones with a second seed
    assert r["archs"] == 4 and r["by_accuracy"]["n"] == 4 and r["noise_ceiling"]["n"] == 3
    assert {"tau", "tau_ci", "rho", "rho_ci", "top5_hit"} <= set(r["by_accuracy"]) and len(r["table"]) == 4
    costs = [row["cost"] for row in r["table"]]
    assert costs == sorted(costs) and costs[0] < costs[-1]  # spread over the cost range
    for name in ("plan.json", "scores.json", "retrains.json", "rank_check.json", "rank_check.png"):
        assert (out / name).is_file(), name
    beside = json.loads((supernets / "a.rank.json").read_text())
    assert beside["supernet_fingerprint"] == r["supernet_fingerprint"]

    calls.clear()  # resuming a finished check, and checking another supernet in the same folder, retrain nothing
    again = spos_hw.rank_check(supernet=str(supernets / "a.pt"), out=str(out), resume=True, progress=False, **TINY)
    other = spos_hw.rank_check(supernet=str(supernets / "b.pt"), out=str(out), resume=True, progress=False, **TINY)
    assert calls == [] and again["by_accuracy"] == r["by_accuracy"]
    assert other["standalone"] == r["standalone"] and other["supernet_fingerprint"] != r["supernet_fingerprint"]
    with pytest.raises(ArtifactMismatch, match="archs"):
        spos_hw.rank_check(supernet=str(supernets / "a.pt"), out=str(out), resume=True, progress=False, **(TINY | {"archs": 5}))

    # a search of that supernet carries the check's figure
    res = spos_hw.search(
        supernet=str(supernets / "a.pt"),
        budgets={"flops": 0.35},
        population=4,
        generations=1,
        recal_images=32,
        holdout=40,
        out=str(tmp_path / "s"),
        threads=1,
        progress=False,
    )
    assert (
        res["rank_check"]["n"] == 4
        and res["rank_check"]["tau"] == r["by_accuracy"]["tau"]
        and res["score_distribution"]["n"] == 4
    )


def test_search_without_a_rank_check_says_so(supernets, tmp_path):
    res = spos_hw.search(
        supernet=str(supernets / "c.pt"),
        budgets={"flops": 0.35},
        population=4,
        generations=1,
        recal_images=32,
        holdout=40,
        out=str(tmp_path / "s"),
        threads=1,
        progress=False,
    )
    assert res["rank_check"] is None and res["score_distribution"]["max"] <= 1.0
