"""The calibration fit never yields a decreasing or non-positive latency model."""

import numpy as np

from spos_hw.latency.calibration import calibration_archs, fit
from spos_hw.nas.spaces import get_space


def test_noisy_decreasing_measurements_fall_back_to_a_ratio():
    out = fit(np.array([1.0, 2.0]), np.array([3.0, 1.0]))  # two noisy samples, latency "falls"
    assert out["slope"] > 0 and out["intercept"] == 0.0 and out["fitted_with"].startswith("ratio")
    assert out["slope"] == np.float64(4.0 / 3.0)


def test_a_sound_affine_fit_is_kept():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    out = fit(x, 1.05 * x - 0.1)
    assert abs(out["slope"] - 1.05) < 1e-6 and abs(out["intercept"] + 0.1) < 1e-6


def test_a_fit_negative_somewhere_in_the_space_falls_back_to_a_ratio():
    x = np.array([10.0, 11.0])  # a steep fit through two close points: -90 + 10 x
    out = fit(x, np.array([10.0, 20.0]), domain=(2.0, 12.0))  # the space's cheapest arch would predict -70 ms
    assert out["intercept"] == 0.0 and out["fitted_with"].startswith("ratio") and out["slope"] > 0
    assert fit(x, np.array([10.0, 20.0]))["intercept"] != 0.0  # measured points alone allowed it


def test_calibration_archs_are_valid_and_span_the_range():
    space = get_space("fbnet-small")
    archs = calibration_archs(space, 10, np.random.default_rng(0))
    costs = space.flops.cost(space.encode(archs))
    for a in archs:
        space.validate(a)
    assert costs[0] == space.flops.bounds()[0] and costs[-1] == space.flops.bounds()[1]
