"""CLI: profile / validate-lut / export / info --lut, and their one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch

from spos_hw.errors import MissingDependency, RuntimeUnavailable
from spos_hw.latency.runtimes import get_runtime, parse_device
from spos_hw.latency.table import LatencyTable
from tests.support.cli import assert_user_error

NO_CUDA = not torch.cuda.is_available()
KEYS = {
    "mape",
    "within_5pct",
    "within_10pct",
    "kendall_tau",
    "retest_kendall_tau",
    "retest_mape",
    "max_abs_error_pct",
    "bias_pct",
    "tau_ratio",
    "samples",
    "statistic",
    "runtime",
    "device",
    "device_name",
    "archs",
}


def test_profile_cli_torch_then_resume_and_info(run_cli, tiny_file, tiny, tmp_path):
    out = tmp_path / "lut.json"
    args = [
        "profile",
        "--space",
        tiny_file,
        "--runtime",
        "torch",
        "--calibrate",
        2,
        "--rounds",
        2,
        "--repeats",
        2,
        "--warmup",
        1,
        "--out",
        out,
    ]
    res = run_cli(*args, "--json")
    assert res.code == 0, res.err
    summary = json.loads(res.out)
    assert summary["entries"] == 8 and summary["runtime"] == "torch" and summary["threads"] == 1
    lo, hi = summary["predicted_range_ms"]
    assert 0 < lo < hi
    assert_user_error(run_cli(*args), "already exists", "--resume")
    assert run_cli(*args, "--resume").code == 0  # complete: nothing to do
    assert_user_error(run_cli(*args[:-2], "--threads", 2, "--out", out, "--resume"), "cannot resume", "threads")
    arch = str(tiny.random_arch(np.random.default_rng(0)))
    res = run_cli("info", arch, "--space", tiny_file, "--lut", out, "--json")
    assert res.code == 0
    info = json.loads(res.out)
    assert info["latency_ms"] > 0 and info["flops"] > 0
    assert "latency_ms: " in run_cli("info", arch, "--space", tiny_file, "--lut", out).out


def test_export_onnx_cli(run_cli, tmp_path, tiny_file, tiny):
    out = tmp_path / "net.onnx"
    arch = str(tiny.random_arch(np.random.default_rng(2)))
    res = run_cli("export", "--arch", arch, "--space", tiny_file, "--format", "onnx", "--out", out, "--json")
    assert res.code == 0, res.err
    model = onnx.load(out)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 16, 16]
    assert json.loads(res.out)["arch"] == arch
    assert_user_error(run_cli("export", "--arch", arch, "--space", tiny_file, "--out", out), "already exists")
    small = ["--space", "shufflenetv2-small", "--out", tmp_path / "y.onnx"]
    assert_user_error(run_cli("export", "--arch", "0,1", *small), "has 2 blocks")
    assert_user_error(run_cli("export", "--arch", ",".join(["0"] * 20), *small, "--format", "tflite"), "tflite")
    assert not (tmp_path / "y.onnx").exists()


def bad_cases(tmp):
    small = ["--space", "shufflenetv2-small", "--out", f"{tmp}/x.json"]
    cases = [
        (["profile", *small, "--runtime", "tvm"], "tvm"),
        (["profile", *small, "--device", "tpu"], "unknown device 'tpu'"),
        (["profile", *small, "--device", "cpu:1"], "unknown device 'cpu:1'"),
        (["profile", *small, "--runtime", "tensorrt"], "tensorrt cannot run on cpu"),
        (["profile", *small, "--batch-size", "0"], "--batch-size"),
        (["profile", *small, "--clock", "thread", "--threads", "2"], "thread clock needs a single-threaded CPU run"),
        (["profile", *small, "--statistic", "mean"], "--statistic"),
        (["profile", *small, "--threads", "0"], "--threads"),
        (["profile", "--out", f"{tmp}/x.json"], "--space"),
        (["profile", *small, "--export-bundle", f"{tmp}/b", "--import-measurements", f"{tmp}/m.json"], "separate steps"),
        (["profile", "--import-measurements", f"{tmp}/missing.json", "--out", f"{tmp}/y.json"], "does not exist"),
        (["profile", "--space", "nope", "--out", f"{tmp}/x.json"], "unknown space 'nope'"),
        (["profile", "--space", "shufflenetv2-small", "--out", f"{tmp}/no/such/dir/x.json"], "does not exist"),
        (["validate-lut", f"{tmp}/missing.json"], "does not exist"),
        (["validate-lut", f"{tmp}/x.json", "--samples", "1"], "--samples"),
        (["info", "0,0", "--space", "shufflenetv2-small", "--lut", f"{tmp}/missing.json"], "has 2 blocks"),
        (["info", ",".join(["0"] * 20), "--space", "shufflenetv2-small", "--lut", f"{tmp}/missing.json"], "does not exist"),
    ]
    if NO_CUDA:
        cases += [
            (["profile", *small, "--device", "cuda"], "onnxruntime-gpu"),
            (["profile", *small, "--runtime", "tensorrt", "--device", "cuda:0"], "CUDA is not available"),
            (["profile", *small, "--runtime", "torch", "--device", "cuda:1"], "CUDA is not available"),
        ]
    return cases


@pytest.mark.parametrize("i", range(len(bad_cases("T"))))
def test_bad_input_is_one_line_exit_2(run_cli, tmp_path, i):
    args, needle = bad_cases(str(tmp_path))[i]
    assert_user_error(run_cli(*args), needle)
    assert not (tmp_path / "x.json").exists()


def test_info_lut_refuses_another_space(run_cli, ort_lut):
    res = run_cli("info", ",".join(["0"] * 20), "--space", "shufflenetv2-small", "--lut", ort_lut)
    assert_user_error(res, "space 'tiny', not 'shufflenetv2-small'", "input size 1x16x16, not 1x32x32")


def test_validate_refuses_a_table_from_another_device(run_cli, ort_lut, tmp_path):
    d = json.loads(ort_lut.read_text())
    d["runtime"]["device_name"] = "Snapdragon 8 Gen 3"
    path = tmp_path / "board.json"
    path.write_text(json.dumps(d))
    assert_user_error(run_cli("validate-lut", path, "--samples", 2), "measured on 'Snapdragon 8 Gen 3'")


def test_runtime_errors():
    assert parse_device("cuda") == "cuda:0" and parse_device(" cuda:3 ") == "cuda:3" and parse_device("cpu") == "cpu"
    with pytest.raises(RuntimeUnavailable, match="unknown runtime"):
        get_runtime("openvino", "cpu")
    with pytest.raises(RuntimeUnavailable, match="threads"):
        get_runtime("onnxruntime", "cpu", threads=0)


def test_missing_tensorrt_names_the_package_and_extra(monkeypatch):
    from spos_hw.deploy.tensorrt import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependency, match=r"'tensorrt' package.*spos-hw\[trt\]"):
        import_tensorrt()


@pytest.mark.gpu
def test_profile_torch_cuda(tiny):
    from spos_hw.latency.profile import profile_space
    from tests.support.spaces import FAST

    table = profile_space(tiny, runtime="torch", device="cuda", calibrate=2, protocol=FAST)
    assert table.runtime["options"]["timing"] == "cuda_events" and len(table.entries) == 8


@pytest.mark.gpu
def test_profile_ort_cuda_or_clear_error(tiny):
    import onnxruntime as ort

    from spos_hw.latency.profile import profile_space
    from tests.support.spaces import FAST

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeUnavailable, match="onnxruntime-gpu"):
            get_runtime("onnxruntime", "cuda")
        return
    table = profile_space(tiny, runtime="onnxruntime", device="cuda", calibrate=2, protocol=FAST)
    assert len(table.entries) == 8


@pytest.mark.trt
def test_profile_tensorrt(tiny):
    from spos_hw.latency.profile import profile_space
    from tests.support.spaces import FAST

    table = profile_space(tiny, runtime="tensorrt", device="cuda", calibrate=2, protocol=FAST)
    assert table.runtime["name"] == "tensorrt" and len(table.entries) == 8 and table.calibration["n"] == 2


def test_validate_lut_json_and_plot(run_cli, ort_lut, tmp_path):
    plot = tmp_path / "scatter.png"
    res = run_cli("validate-lut", ort_lut, "--samples", 2, "--plot", plot, "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert set(report) >= KEYS
    assert report["samples"] == 2 and len(report["archs"]) == 2
    calib = set(LatencyTable.load(ort_lut).calibration_archs)
    assert not calib & {a["arch"] for a in report["archs"]}
    assert all(a["measured_ms"] > 0 and a["remeasured_ms"] > 0 and a["predicted_ms"] > 0 for a in report["archs"])
    assert 0 <= report["within_5pct"] <= report["within_10pct"] <= 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = run_cli("validate-lut", ort_lut, "--samples", 2, "--plot", plot)
    assert res.code == 2 and "already exists" in res.err  # refused before anything is measured
