"""`spos-hw search` end to end on a tiny digits supernet: artifacts, reports, errors, kill + resume."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.cli import assert_user_error
from tests.support.processes import kill_during

SPACE = "shufflenetv2-small:size=8"
SMALL = [
    "--population",
    "4",
    "--generations",
    "2",
    "--topk",
    "2",
    "--mutations",
    "2",
    "--crossovers",
    "2",
    "--recal-images",
    "64",
    "--holdout",
    "60",
    "--threads",
    "1",
    "--no-progress",
]


@pytest.fixture(scope="module")
def supernet(tmp_path_factory) -> Path:
    from spos_hw.api import SupernetConfig, train_supernet

    out = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    train_supernet(
        SupernetConfig(space=SPACE, data="digits", out=str(out), steps=2, batch_size=32, holdout=0.2, threads=1), progress=False
    )
    return out


def _flops_mid() -> float:
    from spos_hw.nas.spaces import get_space

    lo, hi = get_space(SPACE).flops.bounds()
    return (lo + hi) / 2e6


def test_search_report_and_info(run_cli, supernet, tmp_path):
    out = tmp_path / "s"
    res = run_cli("search", "--supernet", supernet, "--flops-m", _flops_mid(), "--params-m", 1.0, *SMALL, "--out", out, "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    result = json.loads((out / "result.json").read_text())
    assert summary["arch"] == result["arch"] and result["evaluated"] == 8 and result["generations"] == 2
    assert result["flops"] <= _flops_mid() * 1e6 and all(b["met"] for b in result["budgets"])
    assert 0.0 <= result["accuracy"] <= 1.0 and result["config"]["holdout_images"] == 60
    assert (
        result["config"]["recal_images"] == 64 and result["supernet"]["fingerprint"] == result["config"]["supernet_fingerprint"]
    )
    for name in ("history.json", "pareto.json", "pareto_flops.png", "pareto_params.png", "state.json"):
        assert (out / name).is_file(), name
    hist = json.loads((out / "history.json").read_text())["entries"]
    # re-pick for a tighter budget from the history, nothing re-scored
    limit = sorted(e["costs"]["flops"] for e in hist)[3] / 1e6
    rep = run_cli("search", "--report", out, "--flops-m", limit, "--json")
    assert rep.code == 0, rep.err
    picked = json.loads(rep.out)
    assert picked["accuracy"] == max(e["score"] for e in hist if e["costs"]["flops"] <= limit * 1e6)
    info = run_cli("info", out / "result.json", "--space", SPACE, "--json")
    assert json.loads(info.out)["arch"] == result["arch"]
    text = run_cli("search", "--report", out, "--flops-m", limit)
    assert "not re-scored" in text.out
    # the search is there: refused without --resume; --resume with more generations extends it
    assert_user_error(
        run_cli("search", "--supernet", supernet, "--flops-m", _flops_mid(), "--params-m", 1.0, *SMALL, "--out", out), "--resume"
    )
    more = [*SMALL[:3], "3", *SMALL[4:]]
    res = run_cli(
        "search", "--supernet", supernet, "--flops-m", _flops_mid(), "--params-m", 1.0, *more, "--out", out, "--resume", "--json"
    )
    assert res.code == 0, res.err
    assert json.loads((out / "result.json").read_text())["evaluated"] == 12
    assert_user_error(
        run_cli("search", "--supernet", supernet, "--flops-m", _flops_mid(), *SMALL, "--out", out, "--resume"),
        "cannot resume",
        "budgets",
    )


def test_random_strategy(run_cli, supernet, tmp_path):
    res = run_cli(
        "search",
        "--supernet",
        supernet,
        "--flops-m",
        _flops_mid(),
        "--strategy",
        "random",
        "--population",
        "3",
        "--generations",
        "2",
        "--recal-images",
        "64",
        "--holdout",
        "60",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        tmp_path / "r",
        "--json",
    )
    assert res.code == 0, res.err
    hist = json.loads((tmp_path / "r" / "history.json").read_text())["entries"]
    assert len(hist) == 6 and {e["origin"] for e in hist} == {"random"}


@pytest.mark.parametrize(
    "args, needles",
    [
        ([], ["at least one budget"]),
        (["--latency-ms", "2"], ["--lut"]),
        (["--flops-m", "0.001"], ["achievable minimum is", "FLOPs"]),
        (["--flops-m", "-3"], ["positive"]),
        (["--flops-m", "50", "--holdout", "100000"], ["--holdout must be in 1.."]),
        (["--flops-m", "50", "--strategy", "random", "--topk", "3"], ["--strategy evolution only"]),
        (["--flops-m", "50", "--population", "0"], ["population"]),
        (["--flops-m", "50", "--mutation-prob", "2"], ["mutation_prob"]),
    ],
)
def test_user_errors(run_cli, supernet, tmp_path, args, needles):
    assert_user_error(run_cli("search", "--supernet", supernet, *args, "--out", tmp_path / "e", "--no-progress"), *needles)


def test_bad_files(run_cli, tmp_path):
    assert_user_error(run_cli("search", "--supernet", tmp_path / "missing.pt", "--flops-m", "5"), "does not exist")
    assert_user_error(run_cli("search", "--flops-m", "5"), "--supernet")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert_user_error(run_cli("search", "--supernet", bad, "--flops-m", "5", "--out", tmp_path / "o"), "cannot be loaded")
    assert_user_error(run_cli("search", "--report", tmp_path, "--flops-m", "5"), "history.json", "does not exist")


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(run_cli, supernet, tmp_path):
    args = [
        "search",
        "--supernet",
        str(supernet),
        "--flops-m",
        str(_flops_mid()),
        "--population",
        "4",
        "--generations",
        "4",
        "--topk",
        "2",
        "--mutations",
        "2",
        "--crossovers",
        "2",
        "--recal-images",
        "64",
        "--holdout",
        "60",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert run_cli(*args, "--out", tmp_path / "full").code == 0
    cut = tmp_path / "cut"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    state = cut / "state.json"
    gen = int(np.random.default_rng(8).integers(1, 3))  # a seeded random generation, then a random delay into the next

    def ready() -> bool:
        return state.is_file() and json.loads(state.read_text())["strategy"]["generation"] >= gen

    kill_during(
        [sys.executable, "-m", "spos_hw", *args, "--out", str(cut)], ready, rng=np.random.default_rng(gen), env=env, max_delay=0.5
    )
    assert not (cut / "result.json").exists()
    assert run_cli(*args, "--out", cut, "--resume").code == 0
    full = json.loads((tmp_path / "full" / "result.json").read_text())
    resumed = json.loads((cut / "result.json").read_text())
    assert (resumed["arch"], resumed["accuracy"], resumed["evaluated"]) == (full["arch"], full["accuracy"], full["evaluated"])
    h_full = json.loads((tmp_path / "full" / "history.json").read_text())["entries"]
    h_cut = json.loads((cut / "history.json").read_text())["entries"]
    assert h_cut == h_full


def test_rank_check_command(run_cli, supernet, tmp_path):
    args = [
        "rank-check",
        supernet,
        "--archs",
        "3",
        "--repeated",
        "0",
        "--steps",
        "1",
        "--batch-size",
        "16",
        "--recal-images",
        "32",
        "--holdout",
        "40",
        "--threads",
        "1",
        "--out",
        tmp_path / "rc",
    ]
    res = run_cli(*args, "--json")
    assert res.code == 0, res.err
    r = json.loads(res.out)
    assert r["kind"] == "rank-check" and r["archs"] == 3 and r["noise_ceiling"] is None
    again = run_cli(*args, "--resume")  # nothing left to retrain: the report again, as text
    assert again.code == 0 and "Kendall tau" in again.out and "noise ceiling: not measured" in again.out
    assert_user_error(run_cli(*args), "already exists", "--resume")


def test_out_is_created_only_by_a_search_that_runs(run_cli, supernet, tmp_path):
    """--out may be missing (the search creates it), its parent may not; a failing search leaves no folder."""
    assert_user_error(
        run_cli("search", "--supernet", supernet, "--flops-m", "1", "--out", tmp_path / "no" / "s"), "does not exist"
    )
    assert not (tmp_path / "no").exists()
    assert_user_error(
        run_cli("search", "--supernet", supernet, "--flops-m", "0.01", "--out", tmp_path / "s"), "achievable minimum"
    )
    assert not (tmp_path / "s").exists()
    res = run_cli("search", "--supernet", supernet, "--flops-m", "1", *SMALL, "--out", tmp_path / "s")
    assert res.code == 0 and (tmp_path / "s" / "result.json").is_file()
