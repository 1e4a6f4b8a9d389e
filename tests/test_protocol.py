"""The interleaved timing protocol (no runtime needed: fake timers)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from spos_hw.errors import SposHwError
from spos_hw.protocol import Protocol, ProtocolError, flatten, measure, summarize


class Fake:
    """A timer returning fixed times and logging every call."""

    def __init__(self, key, log, ms):
        self.key, self.log, self.ms = key, log, ms

    def __call__(self, n):
        self.log.append((self.key, n))
        return [self.ms] * n


def test_measure_interleaves_rounds_and_counts_runs():
    log = []
    timers = {k: Fake(k, log, ms) for k, ms in (("a", 1.0), ("b", 2.0), ("c", 3.0))}
    p = Protocol(warmup=3, rounds=4, repeats=5, turn_warmup=2)
    out = measure(timers, p)
    assert {k: len(v) for k, v in out.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(len(turn) == 5 for v in out.values() for turn in v)
    assert out["b"][0][0] == 2.0
    assert log[:3] == [("a", 3), ("b", 3), ("c", 3)]  # initial warm-up of every entry
    timed = [k for k, n in log[3:] if n == 5]
    rounds = [timed[i : i + 3] for i in range(0, 12, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)  # every entry once per round
    assert len({tuple(r) for r in rounds}) > 1  # the order is shuffled between rounds
    assert sum(1 for k, n in log if n == 2) == 12  # a turn warm-up before every turn


def test_measure_resumes_without_repeating_finished_turns():
    log = []
    timers = {k: Fake(k, log, 1.0) for k in "ab"}
    p = Protocol(warmup=0, rounds=3, repeats=2, turn_warmup=0, turn_warmup_ms=0.0)
    out = measure(timers, p, samples={"a": [[9.0, 9.0], [8.0, 8.0]], "b": [[7.0, 7.0]]})
    assert out["a"][:2] == [[9.0, 9.0], [8.0, 8.0]] and out["b"][0] == [7.0, 7.0]
    assert sorted(k for k, _ in log) == ["a", "b", "b"]  # 1 missing turn of a, 2 of b


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    v = rng.gamma(2.0, 1.0, size=101)
    s = summarize(v)
    assert s["n"] == 101 and s["min"] == v.min() and s["median"] == np.median(v)
    q25, q75 = np.percentile(v, [25, 75])
    assert s["iqr"] == pytest.approx(q75 - q25) and s["mad"] == pytest.approx(np.median(np.abs(v - np.median(v))))


@pytest.mark.parametrize("kw", [{"rounds": 0}, {"repeats": -1}, {"warmup": -2}, {"statistic": "mean"}, {"rounds": 1.5}])
def test_protocol_rejects_bad_values(kw):
    with pytest.raises(ProtocolError):
        Protocol(**kw)
    assert issubclass(ProtocolError, SposHwError)


def test_protocol_json_roundtrip():
    p = Protocol(rounds=7, statistic="median")
    assert Protocol.from_json(p.to_json()) == p
    with pytest.raises(ProtocolError):
        Protocol.from_json({"rounds": 3, "bogus": 1})


class ColdAfterSwitch:
    """A runtime whose first ``cold`` runs after another entry ran take 3x: a cache refilled, a core
    woken up. Each run really takes its time (busy wait), as the protocol's time-based warm-up sees it."""

    last = None

    def __init__(self, key, ms=0.05, cold=40):
        self.key, self.ms, self.cold, self.left = key, ms, cold, 0

    def __call__(self, n):
        if ColdAfterSwitch.last != self.key:
            ColdAfterSwitch.last, self.left = self.key, self.cold
        out = []
        for _ in range(n):
            t = self.ms * (3 if self.left > 0 else 1)
            self.left -= 1
            end = time.perf_counter() + t / 1e3
            while time.perf_counter() < end:
                pass
            out.append(t)
        return out


def test_every_timed_run_is_warm_even_when_a_switch_costs_many_runs():
    """40 cold runs (6 ms) after each switch: a fixed 2-run warm-up times only cold runs and reads
    3x the truth; the time-based turn warm-up reaches the warm figure."""
    timers = {k: ColdAfterSwitch(k) for k in "abc"}
    old = measure(timers, Protocol(warmup=0, rounds=3, repeats=10, turn_warmup=2, turn_warmup_ms=0.0, clock="thread"))
    assert all(min(flatten(v)) == pytest.approx(0.15) for v in old.values())  # the cold-cache bias
    new = measure(timers, Protocol(warmup=0, rounds=3, repeats=10, turn_warmup=2, turn_warmup_ms=10.0, clock="thread"))
    assert all(min(flatten(v)) == pytest.approx(0.05) for v in new.values())
    assert Protocol().turn_warmup_ms >= 5.0 and Protocol.from_json({"warmup": 1}).turn_warmup_ms == 0.0  # older tables: none
