"""Post-training INT8 for float nets: calibration methods, per-channel weights, a TensorRT-conformant result."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from spos_hw.api import export
from spos_hw.deploy.ptq import BINS, amax_from_histogram, quantize_weight
from spos_hw.deploy.trt_check import check_trt
from spos_hw.errors import ConfigError
from tests.support.files import write_subnet_checkpoint as write_checkpoint


def test_weights_per_channel_symmetric():
    w = np.array([[0.5, -1.0, 0.25], [0.01, 0.02, -0.03]], np.float32)
    q, s = quantize_weight(w, 0)
    assert q.dtype == np.int8 and np.allclose(s, [1.0 / 127, 0.03 / 127])
    assert q[0].tolist() == [64, -127, 32] and q[1].tolist() == [42, 85, -127]


def test_calibration_methods_on_a_heavy_tail():
    rng = np.random.default_rng(0)
    x = np.abs(np.concatenate([rng.normal(size=200_000), [40.0]]))  # one outlier
    edge = float(x.max())
    hist = np.histogram(x, bins=BINS, range=(0, edge))[0]
    pct = amax_from_histogram(hist, edge, "percentile")
    ent = amax_from_histogram(hist, edge, "entropy")
    assert 3.0 < pct < 6.0  # the 99.99th percentile of |N(0, 1)| is 3.9
    assert 1.0 < ent < edge / 2  # the entropy threshold clips the outlier
    assert amax_from_histogram(np.zeros(BINS, np.int64), 1.0, "entropy") == 1.0


@pytest.fixture(scope="module")
def float_ckpt(tmp_path_factory, tiny10):
    arch = tiny10.random_arch(np.random.default_rng(3))
    return write_checkpoint(tmp_path_factory.mktemp("ptq") / "model.pt", tiny10, arch)


@pytest.mark.parametrize("method", ["max", "percentile", "entropy"])
def test_ptq_export_is_trt_conformant_and_agrees(tmp_path, float_ckpt, method):
    out = tmp_path / f"{method}.onnx"
    res = export(checkpoint=float_ckpt, out=out, precision="int8", calibrate=64, calibration=method)
    assert res["precision"] == "int8" and res["verified"] and res["calibration"]["method"] == method
    assert res["calibration"]["images"] == 64 and res["calibration"]["layers"] > 0
    assert res["top1_agreement"] >= 0.97
    model = onnx.load(out)
    assert check_trt(model) == []
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == res["calibration"]["activation_tensors"]


def test_ptq_bad_requests(tmp_path, float_ckpt, tiny10):
    with pytest.raises(ConfigError, match="--calibrate N"):
        export(checkpoint=float_ckpt, out=tmp_path / "a.onnx", precision="int8")
    with pytest.raises(ConfigError, match="with --precision int8"):
        export(checkpoint=float_ckpt, out=tmp_path / "b.onnx", calibrate=8)
    with pytest.raises(ConfigError, match="unknown calibration method"):
        export(checkpoint=float_ckpt, out=tmp_path / "c.onnx", precision="int8", calibrate=8, calibration="mse")
    with pytest.raises(ConfigError, match="needs --checkpoint"):
        export(
            arch=str(tiny10.random_arch(np.random.default_rng(0))),
            space=tiny10,
            out=tmp_path / "d.onnx",
            precision="int8",
            calibrate=8,
        )
    assert not list(tmp_path.iterdir())
