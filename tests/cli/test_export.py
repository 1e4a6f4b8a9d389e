"""`spos-hw export` end to end: checkpoint export, --check-trt, and one-line errors that leave no file."""

from __future__ import annotations

import json

import numpy as np
import onnx

from tests.support.cli import assert_user_error
from tests.support.files import write_subnet_checkpoint as write_checkpoint
from tests.support.spaces import make_tiny, space_file


def test_cli_export_checkpoint_then_check_trt(run_cli, tmp_path, tiny10):
    ck = write_checkpoint(tmp_path / "model.pt", tiny10, tiny10.random_arch(np.random.default_rng(1)))
    res = run_cli("export", "--checkpoint", ck, "--json", "--batch-size", "2")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    assert info["path"] == str(tmp_path / "model.onnx") and info["verified"] and info["batch"] == 2
    res = run_cli("export", "--check-trt", tmp_path / "model.onnx")
    assert res.code == 0 and "TensorRT-ready" in res.out
    assert_user_error(run_cli("export", "--checkpoint", ck), "already exists")


def test_cli_bad_inputs_are_one_line_and_leave_no_file(run_cli, tmp_path, tiny10):
    ck = write_checkpoint(tmp_path / "model.pt", tiny10, tiny10.random_arch(np.random.default_rng(1)))
    other = space_file(tmp_path, make_tiny("other"))
    out = tmp_path / "o.onnx"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    cases = [
        (["--checkpoint", ck, "--space", other, "--out", out], "was made for space"),
        (
            ["--checkpoint", ck, "--space", space_file(tmp_path, tiny10), "--arch", "op=0,0,0;ch=0,0,0", "--out", out],
            "holds arch",
        ),
        (["--checkpoint", corrupt, "--out", out], "cannot be loaded"),
        (["--checkpoint", tmp_path / "missing.pt", "--out", out], "does not exist"),
        (["--checkpoint", ck, "--out", tmp_path / "nope" / "o.onnx"], "output folder"),
        (["--checkpoint", ck, "--precision", "int8", "--out", out], "give --calibrate N"),
        (["--checkpoint", ck, "--format", "trt", "--out", tmp_path / "x.onnx"], "engine"),
        (["--out", out], "needs --checkpoint"),
        (["--check-trt", corrupt], "not a readable ONNX"),
    ]
    for args, needle in cases:
        assert_user_error(run_cli("export", *args), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.pt", "corrupt.pt", "other.json", "tiny10.json"])


def test_cli_check_trt_lists_every_violation(run_cli, tmp_path):
    from tests.support.onnx_models import qdq_model

    bad = tmp_path / "bad.onnx"
    onnx.save(qdq_model(act_zp=2, w_scale=(0.1, -1.0)), bad)
    res = run_cli("export", "--check-trt", bad)
    assert_user_error(res, "not TensorRT-ready", "4 violation")
    assert "act_q: [zero-point]" in res.out and "w_dq: [scale]" in res.out
    res = run_cli("export", "--check-trt", bad, "--json")
    assert json.loads(res.out)["ready"] is False and len(json.loads(res.out)["violations"]) == 4
