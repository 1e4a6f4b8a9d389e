"""Boards without torch: export a bundle, run its runner in a bare subprocess, import the result."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spos_hw.errors import ArtifactError, ArtifactMismatch
from spos_hw.latency.bundle import MANIFEST, RUNNER, export_bundle, import_measurements
from spos_hw.latency.table import LatencyTable
from tests.support.cli import assert_user_error
from tests.support.spaces import FAST, make_tiny

# The runner may import only the standard library, numpy and onnxruntime.
BARE = (
    "import sys, runpy\n"
    "for name in ('torch', 'spos_hw', 'onnx', 'sklearn', 'scipy', 'click'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = [sys.argv[1]] + sys.argv[2:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_runner(bundle, *args):
    return subprocess.run(
        [sys.executable, "-c", BARE, str(bundle / RUNNER), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=bundle,
        timeout=300,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny):
    from spos_hw.latency import onnx_units

    folder = tmp_path_factory.mktemp("b") / "bundle"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(onnx_units, "EXPORT_CHUNK", 6)  # 10 units: two export calls
        export_bundle(tiny, folder, calibrate=2, protocol=FAST)
    return folder


def test_bundle_round_trip(bundle, tiny, tmp_path, run_cli):
    manifest = json.loads((bundle / MANIFEST).read_text())
    n_units = len(manifest["units"])
    assert n_units == 8 + 2 + 2 and all((bundle / u["file"]).is_file() for u in manifest["units"])
    meas = tmp_path / "measurements.json"
    res = run_runner(bundle, "--out", meas)
    assert res.returncode == 0, res.stderr
    rec = json.loads(meas.read_text())
    assert rec["complete"] and rec["runtime"]["name"] == "onnxruntime" and rec["runtime"]["threads"] == 1
    assert all(len(rec["samples"][u["key"]]) == FAST.rounds for u in manifest["units"])

    out = tmp_path / "lut.json"
    res = run_cli("profile", "--import-measurements", meas, "--out", out, "--json")
    assert res.code == 0, res.err
    table = LatencyTable.load(out)
    assert table.source == "bundle" and table.complete
    assert table.calibration_archs == manifest["calibration_archs"] and table.calibration["n"] == 2
    table.check(tiny, batch_size=1)
    assert len(table.entries) == 8
    # the imported table is a normal table: info --lut works with it
    arch = tiny.random_arch(__import__("numpy").random.default_rng(0))
    res = run_cli("info", str(arch), "--space", tiny_file_for(tmp_path, tiny), "--lut", out, "--json")
    assert res.code == 0 and json.loads(res.out)["latency_ms"] > 0

    # an existing measurements file is not clobbered; --resume continues (here: nothing left to do)
    again = run_runner(bundle, "--out", meas)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert run_runner(bundle, "--out", meas, "--resume").returncode == 0

    with pytest.raises(ArtifactMismatch, match="space 'tiny', not 'other'"):
        import_measurements(meas, space=make_tiny(name="other"))


def tiny_file_for(tmp_path, tiny):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny.to_json()))
    return path


def test_incomplete_or_foreign_measurements_are_refused(bundle, tmp_path, run_cli):
    meas = tmp_path / "m.json"
    meas.write_text(json.dumps({"schema": "spos-hw/latency-measurements", "version": 1, "complete": False}))
    with pytest.raises(ArtifactError, match="incomplete"):
        import_measurements(meas)
    meas.write_text("{}")
    assert_user_error(
        run_cli("profile", "--import-measurements", meas, "--out", tmp_path / "x.json"), "not a spos-hw bundle measurements file"
    )


def test_bundle_folder_is_not_clobbered(bundle, tiny, tmp_path, run_cli):
    assert_user_error(run_cli("profile", "--space", "shufflenetv2-small", "--export-bundle", bundle), "already exists")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(Exception, match="not a bundle"):
        export_bundle(tiny, user, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me"
