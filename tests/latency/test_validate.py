"""validate-lut: report keys, the plot, fresh architectures, the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from spos_hw.latency.validate import fresh_archs, metrics


def test_metrics_on_known_values():
    measured = np.array([1.0, 2.0, 3.0, 4.0])
    m = metrics(measured * np.array([1.0, 1.04, 0.92, 1.2]), measured, measured * 1.01)
    assert m["mape"] == pytest.approx((0 + 4 + 8 + 20) / 4)
    assert m["within_5pct"] == 0.5 and m["within_10pct"] == 0.75 and m["max_abs_error_pct"] == pytest.approx(20)
    assert m["kendall_tau"] == pytest.approx(1.0) and m["retest_kendall_tau"] == pytest.approx(1.0)
    assert m["retest_mape"] == pytest.approx(1.0)


def test_fresh_archs_are_distinct_and_exclude_calibration(tiny):
    rng = np.random.default_rng(0)
    taken = {str(a) for a in tiny.decode(tiny.sample(np.random.default_rng(1), 5))}
    archs = fresh_archs(tiny, 20, rng, taken)
    keys = [str(a) for a in archs]
    assert len(set(keys)) == 20 and not set(keys) & taken
    from spos_hw.errors import Infeasible

    with pytest.raises(Infeasible):
        fresh_archs(tiny, tiny.size + 1, rng, set())


def test_noise_warnings_say_when_the_machine_limits_the_figures():
    from spos_hw.latency.validate import noise_warnings

    quiet = {"retest_mape": 0.5, "mape": 2.0, "measured_p5_p95_pct": 15.0}
    assert noise_warnings(quiet) == []
    noisy = noise_warnings({"retest_mape": 24.0, "mape": 46.7, "measured_p5_p95_pct": 15.0})
    assert len(noisy) == 2 and "too noisy" in noisy[0] and "spread only" in noisy[1]
    floor = noise_warnings({"retest_mape": 1.0, "mape": 0.9, "measured_p5_p95_pct": 15.0})
    assert len(floor) == 1 and "noise floor" in floor[0]
    assert all("\n" not in w for w in noisy + floor)  # one line each
