"""``spos-hw demo`` end to end on a tiny preset: artifacts, summary keys, skip-on-rerun, refusals."""

from __future__ import annotations

import json

import pytest

from spos_hw.demo import STATE, Demo, DemoConfig, Preset, latency_budget, run_demo

TINY = Preset(
    rounds=2,
    calibrate=2,
    validate=3,
    supernet_epochs=0.1,
    population=4,
    generations=2,
    recal_images=64,
    holdout=64,
    retrain_epochs=0.1,
    compare=3,
    batch_sizes=(1,),
)
SPACE = "shufflenetv2-small:size=8"
KEYS = {
    "test_accuracy",
    "latency_budget_ms",
    "latency_predicted_ms",
    "latency_measured_ms",
    "flops",
    "params",
    "onnx_max_abs_diff",
    "onnx_top1_agreement",
    "arch",
    "wall_seconds",
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "run"
    summary = run_demo(workdir=str(d), data="digits", preset=TINY, space=SPACE, progress=False, threads=1)
    return d, summary


@pytest.mark.slow
def test_demo_writes_every_artifact_and_summary(demo_dir):
    d, s = demo_dir
    assert set(s) >= KEYS
    assert json.loads((d / "summary.json").read_text()) == s
    assert set(s["wall_seconds"]) == {"profile", "train_supernet", "search", "compare", "retrain", "export", "measure"}
    nets = s["searched_vs_random"]
    assert [n["role"] for n in nets] == ["searched", "random", "random", "random"] and nets[0]["arch"] == s["arch"]
    assert all(n["latency_predicted_ms"] <= s["latency_budget_ms"] and n["latency_measured_ms"] > 0 for n in nets)
    assert s["verdict"].startswith("the searched net ") and "random nets" in s["verdict"] and s["verdicts"][0]["n_random"] == 3
    assert s["latency_batch_size"] == 1 and "spread_over_noise" in s["latency_spread"]
    assert 0.0 <= s["test_accuracy"] <= 1.0 and s["onnx_top1_agreement"] == 1.0 and s["onnx_max_abs_diff"] <= 1e-4
    assert s["latency_measured_ms"] > 0 and s["latency_predicted_ms"] <= s["latency_budget_ms"]
    for name in (
        "lut.json",
        "supernet.pt",
        "search/result.json",
        "compare.json",
        "model.pt",
        "model.onnx",
        "latency.json",
        "report.md",
    ):
        assert (d / name).is_file(), name
    assert {"latency_predicted_vs_measured.png", "supernet.png", "model.png", "search/pareto_latency.png"} <= set(
        s["artifacts"]["plots"]
    )
    assert s["arch"] in (d / "report.md").read_text()


@pytest.mark.slow
def test_rerun_skips_valid_steps_and_redoes_a_changed_one(demo_dir, caplog):
    d, s = demo_dir
    state = json.loads((d / STATE).read_text())
    caplog.set_level("INFO", logger="spos_hw.demo")
    again = run_demo(workdir=str(d), data="digits", preset=TINY, space=SPACE, progress=False, threads=1)
    assert again["wall_seconds"] == s["wall_seconds"] and again["arch"] == s["arch"]
    assert caplog.text.count("done before") == 7
    (d / "latency.json").unlink()  # only the measurement is redone
    caplog.clear()
    run_demo(workdir=str(d), data="digits", preset=TINY, space=SPACE, progress=False, threads=1)
    assert caplog.text.count("done before") == 6
    new = json.loads((d / STATE).read_text())
    for step in ("profile", "train_supernet", "search", "compare", "retrain", "export"):
        assert new["steps"][step] == state["steps"][step]


@pytest.mark.slow
def test_changed_input_and_other_settings_are_refused(demo_dir):
    from spos_hw.errors import OutputError

    d, _ = demo_dir
    with pytest.raises(OutputError, match="other settings"):
        Demo(DemoConfig(workdir=str(d), data="digits", preset=TINY, space=SPACE, seed=1))
    path = d / STATE
    saved = path.read_text()
    state = json.loads(saved)
    state["steps"]["export"]["inputs"]["model.pt"] = "0" * 64  # as if model.pt changed after the export used it
    path.write_text(json.dumps(state))
    try:
        with pytest.raises(OutputError, match=r"model\.pt changed after the export step"):
            run_demo(workdir=str(d), data="digits", preset=TINY, space=SPACE, progress=False)
    finally:
        path.write_text(saved)


def test_latency_budget_is_the_percentile_of_predictions():
    import numpy as np

    from spos_hw.nas.spaces import get_space

    space = get_space("shufflenetv2-small")
    lat = space.flops  # any additive cost model works the same way
    b = latency_budget(lat, space, 40.0, samples=20_000, seed=3)
    costs = lat.cost(space.sample(np.random.default_rng(3), 20_000))
    assert b == pytest.approx(np.percentile(costs, 40.0))
    assert 0.35 < (costs <= b).mean() < 0.45


def test_not_empty_folder_is_refused(tmp_path):
    from spos_hw.errors import OutputError

    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(OutputError, match="not empty"):
        Demo(DemoConfig(workdir=str(tmp_path), data="digits"))
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_a_resumed_step_counts_the_killed_attempts_work(tmp_path):
    """Wall time of a step killed and resumed: the killed attempt until its last write, plus the rest."""
    import os
    import time

    demo = Demo(DemoConfig(workdir=str(tmp_path / "d"), data="digits", preset=TINY, space=SPACE), progress=False)
    demo.dir.mkdir()

    def killed(resume):
        (demo.dir / "x.txt").write_text("half done")
        raise KeyboardInterrupt  # a kill: the step records nothing

    with pytest.raises(KeyboardInterrupt):
        demo.step("x", "x.txt", killed)
    start = demo.state["attempts"]["x"]
    os.utime(demo.dir / "x.txt", (start + 40.0, start + 40.0))  # its last checkpoint write came 40 s in

    def finish(resume):
        assert resume
        time.sleep(0.2)
        (demo.dir / "x.txt").write_text("done")
        return {}

    rec = Demo(DemoConfig(workdir=str(tmp_path / "d"), data="digits", preset=TINY, space=SPACE), progress=False).step(
        "x", "x.txt", finish
    )
    assert 40.1 <= rec["wall_seconds"] < 45.0
