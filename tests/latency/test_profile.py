"""profile_space: coverage of every signature, measured once each, resume after a kill; the predictor."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from spos_hw.errors import ArtifactMismatch, OutputError
from spos_hw.latency.predictor import load_predictor, predictor_from_table, table_cost
from spos_hw.latency.profile import profile_space
from spos_hw.latency.runtimes.torch_runtime import TorchRuntime
from spos_hw.latency.table import LatencyTable
from tests.support.spaces import FAST


class Killed(Exception):
    pass


class CountingTorch(TorchRuntime):
    """The torch CPU runtime, counting prepared units and timed turns; optionally dying after k turns."""

    def __init__(self, die_after: int | None = None):
        super().__init__("cpu", threads=1)
        self.prepared: list[str] = []
        self.turns: list[tuple] = []
        self.die_after = die_after

    def timer(self, module, input_shape):
        inner = super().timer(module, input_shape)
        shape = tuple(input_shape)
        self.prepared.append(shape)

        def timer(n):
            if n == FAST.repeats:
                if self.die_after is not None and len(self.turns) >= self.die_after:
                    raise Killed()
                self.turns.append(shape)
            return inner(n)

        return timer


def all_signatures(space):
    return {space.signature(p, c) for p in space.positions for c in itertools.product(*map(range, space.sizes))}


def test_table_covers_every_signature_each_measured_once(tiny):
    rt = CountingTorch()
    table = profile_space(tiny, runtime=rt, calibrate=2, protocol=FAST)
    sigs = all_signatures(tiny)
    assert set(table.entries) == sigs and set(table.fixed) == {"stem", "head"}
    # blocks 1 and 2 of the tiny space are identical: 2 positions x 4 choices, not 3 x 4
    assert len(sigs) == 8 and tiny.num_blocks == 3
    assert len(rt.prepared) == len(sigs) + 2 + 2  # blocks + stem + head + 2 calibration subnets
    assert all(s["n"] == FAST.samples for s in table.entries.values())
    assert table.runtime["name"] == "torch" and table.export == {"format": "torch", "mode": "eager"}
    assert table.calibration["n"] == 2 and len(table.calibration["measured_ms"]) == 2


def test_resume_after_a_kill_loses_no_finished_turn(tiny, tmp_path):
    out = tmp_path / "lut.json"
    total_units = len(all_signatures(tiny)) + 2 + 2
    with pytest.raises(Killed):
        profile_space(tiny, runtime=CountingTorch(die_after=13), calibrate=2, protocol=FAST, out=out, checkpoint_s=0)
    partial = LatencyTable.load(out, allow_partial=True)
    assert partial.complete is False
    finished = {k: [list(t) for t in v] for k, v in partial.samples.items()}
    assert sum(len(v) for v in finished.values()) == 13  # every finished turn was saved
    with pytest.raises(OutputError, match="--resume"):
        profile_space(tiny, runtime=CountingTorch(), calibrate=2, protocol=FAST, out=out)
    with pytest.raises(ArtifactMismatch, match="calibration subnets"):
        profile_space(tiny, runtime=CountingTorch(), calibrate=3, protocol=FAST, out=out, resume=True)
    rt = CountingTorch()
    table = profile_space(tiny, runtime=rt, calibrate=2, protocol=FAST, out=out, resume=True, checkpoint_s=0)
    assert len(rt.turns) == total_units * FAST.rounds - 13  # nothing finished was measured again
    assert table.complete and table.samples is None
    assert all(s["n"] == FAST.samples for s in list(table.entries.values()) + list(table.fixed.values()))
    assert set(table.entries) == all_signatures(tiny)
    assert partial.calibration_archs == table.calibration_archs
    saved = json.loads(out.read_text())
    assert saved["complete"] is True and "samples" not in saved
    # resuming a complete table is a no-op
    rt2 = CountingTorch()
    profile_space(tiny, runtime=rt2, calibrate=2, protocol=FAST, out=out, resume=True)
    assert rt2.turns == []


def test_vectorized_prediction_equals_a_per_arch_loop(ort_lut, tiny):
    table = LatencyTable.load(ort_lut)
    cost = load_predictor(ort_lut, tiny)
    batch = tiny.sample(np.random.default_rng(0), 500)
    fast = cost.cost(batch)
    cal = table.calibration
    stat = table.protocol.statistic
    slow = []
    for arch in tiny.decode(batch):
        row = arch.to_array()
        s = table.fixed["stem"][stat] + table.fixed["head"][stat]
        s += sum(table.entries[tiny.signature(p, row[p.index])][stat] for p in tiny.positions)
        slow.append(cal["slope"] * s + cal["intercept"])
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert cost.name == "latency" and cost.unit == "ms"
    raw = table_cost(table, tiny)
    np.testing.assert_allclose(predictor_from_table(table, tiny, calibrated=False).cost(batch), raw.cost(batch))
    np.testing.assert_allclose(cal["table_ms"], raw.cost(tiny.encode([tiny.arch(a) for a in cal["archs"]])))


def test_ort_table_records_onnx_export(ort_lut):
    d = json.loads(ort_lut.read_text())
    assert d["export"]["format"] == "onnx" and d["export"]["opset"] == 21
    assert d["calibration"]["model"] == "affine" and len(d["calibration_archs"]) == 2
    assert all(v["min"] > 0 and v["n"] == FAST.samples for v in d["entries"].values())


def test_table_reports_the_random_arch_spread_beside_its_noise_floor(ort_lut):
    from spos_hw.latency.predictor import describe_table
    from spos_hw.latency.profile import split_half_noise

    d = describe_table(LatencyTable.load(ort_lut))
    r = d["random_arch_latency"]
    assert r["p5_ms"] <= r["median_ms"] <= r["p95_ms"] and r["spread_pct"] >= 0
    assert d["noise_floor_pct"] is not None and d["noise_floor_pct"] >= 0
    assert d["spread_over_noise"] == pytest.approx(r["spread_pct"] / d["noise_floor_pct"])
    assert split_half_noise([[[1.0, 1.1], [1.2, 1.3]]], "min") == pytest.approx(20.0)  # halves' minima 1.0 and 1.2
    assert split_half_noise([[[1.0]]], "min") is None  # one round: no halves
