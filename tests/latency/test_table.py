"""LatencyTable: file format, partial tables, mismatch refusal; calibration fit and subnet choice."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from spos_hw.errors import ArtifactError, ArtifactMismatch
from spos_hw.latency import calibration
from spos_hw.latency.table import LatencyTable, load_table
from tests.support.spaces import make_tiny


def test_table_roundtrip_and_schema(ort_lut, tiny):
    table = load_table(ort_lut, tiny, batch_size=1)
    d = json.loads(ort_lut.read_text())
    assert d["schema"] == "spos-hw/latency-table" and d["version"] == 1
    for key in (
        "space",
        "input_shape",
        "batch_size",
        "runtime",
        "libraries",
        "protocol",
        "created",
        "entries",
        "fixed",
        "calibration",
    ):
        assert key in d, key
    assert d["space"]["fingerprint"] == tiny.fingerprint and d["space"]["spec"] == json.loads(json.dumps(tiny.to_json()))
    assert d["runtime"]["name"] == "onnxruntime" and d["runtime"]["threads"] == 1 and d["runtime"]["version"]
    assert d["runtime"]["options"]["session.intra_op.allow_spinning"] == "0"
    assert "samples" not in d and d["complete"] is True
    again = LatencyTable.from_json(table.to_json())
    assert again == table
    assert table.build_space().fingerprint == tiny.fingerprint


def test_partial_table_is_refused_unless_resuming(tmp_path, ort_lut):
    d = json.loads(ort_lut.read_text())
    d["complete"] = False
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ArtifactError, match="--resume"):
        LatencyTable.load(path)
    assert LatencyTable.load(path, allow_partial=True).complete is False


@pytest.mark.parametrize(
    "other, batch, needle",
    [
        (make_tiny(name="other"), None, "space 'tiny', not 'other'"),
        (make_tiny(size=24), None, "input size 1x16x16, not 1x24x24"),
        (dataclasses.replace(make_tiny(), num_classes=7), None, "another spec of space 'tiny'"),
        (make_tiny(), 8, "batch size 1, not 8"),
    ],
)
def test_mismatched_table_is_refused(ort_lut, other, batch, needle):
    with pytest.raises(ArtifactMismatch, match=needle.replace("(", r"\(")):
        load_table(ort_lut, other, batch_size=batch)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{", "not valid JSON"),
        ("[]", "not a spos-hw latency table"),
        ('{"schema": "spos-hw/latency-table", "version": 99}', "version 99"),
    ],
)
def test_bad_table_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ArtifactError, match=needle):
        LatencyTable.load(path)


def test_calibration_fit_recovers_a_line_and_degenerate_cases():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    fit = calibration.fit(x, 0.8 * x + 0.25)
    assert fit["slope"] == pytest.approx(0.8, rel=1e-6) and fit["intercept"] == pytest.approx(0.25, abs=1e-6)
    y = 0.8 * x + 0.25
    y[2] += 3.0  # one bad run: the robust fit keeps the line
    robust = calibration.fit(x, y)
    assert robust["slope"] == pytest.approx(0.8, rel=0.02) and robust["intercept"] == pytest.approx(0.25, abs=0.05)
    assert calibration.fit(np.array([2.0]), np.array([3.0]))["slope"] == pytest.approx(1.5)
    none = calibration.fit(np.zeros(0), np.zeros(0))
    assert (none["slope"], none["intercept"]) == (1.0, 0.0)


def test_calibration_archs_span_the_flops_range(tiny):
    from spos_hw.nas.spaces import get_space

    space = get_space("shufflenetv2-imagenet")
    archs = calibration.calibration_archs(space, 10, np.random.default_rng(0))
    assert len({str(a) for a in archs}) == 10
    flops = space.flops.cost(space.encode(archs))
    lo, hi = space.flops.bounds()
    assert flops[0] == lo and flops[-1] == hi and np.all(np.diff(flops) > 0)
    gaps = np.diff(flops) / (hi - lo)
    assert gaps.max() < 0.25  # evenly spread, not bunched in the middle
    again = calibration.calibration_archs(space, 10, np.random.default_rng(0))
    assert [str(a) for a in again] == [str(a) for a in archs]
    assert calibration.calibration_archs(tiny, 0, np.random.default_rng(0)) == []
