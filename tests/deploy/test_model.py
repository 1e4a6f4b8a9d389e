"""export_model: ONNX files with metadata, verified against torch (fp32, fp16, Q/DQ), TensorRT fallback."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
import torch

from spos_hw.api import export
from spos_hw.deploy.verify import check, compare, ort_session
from spos_hw.errors import ArtifactMismatch, ConfigError, MissingDependency, VerificationError
from tests.support.files import write_subnet_checkpoint as write_checkpoint
from tests.support.spaces import make_tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny10):
    arch = tiny10.random_arch(np.random.default_rng(3))
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "model.pt", tiny10, arch), arch


def props(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_checkpoint_export_records_metadata_and_verifies_on_real_images(tmp_path, ckpt, tiny10):
    path, arch = ckpt
    out = tmp_path / "net.onnx"
    res = export(checkpoint=path, out=out, dynamic_batch=True, batch_size=4)
    json.dumps(res)  # JSON-serializable
    assert res["verified"] and res["path"] == str(out) and res["format"] == "onnx" and res["precision"] == "fp32"
    assert res["max_abs_diff"] <= 1e-4 and res["top1_agreement"] == 1.0
    assert res["inputs"] == "digits test split (256 images)"
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    meta = props(out)
    assert meta["spos_hw.arch"] == str(arch) and meta["spos_hw.space_fingerprint"] == tiny10.fingerprint
    assert json.loads(meta["spos_hw.normalization"]) == {"scale": "1/255", "mean": [0.25], "std": [0.5]}
    assert json.loads(meta["spos_hw.class_names"]) == [f"class{i}" for i in range(10)]
    assert tiny10.arch(json.loads(meta["spos_hw.arch_json"])) == arch
    sess = ort_session(out.read_bytes())
    for n in (1, 3):  # dynamic batch
        assert sess.run(None, {"input": np.zeros((n, 1, 16, 16), np.float32)})[0].shape == (n, 10)


@pytest.mark.slow
def test_fp16_and_given_inputs(tmp_path, ckpt):
    x = torch.randn(40, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    res = export(checkpoint=ckpt[0], out=tmp_path / "h.onnx", precision="fp16", batch_size=8, verify_inputs=x)
    assert res["verified"] and res["inputs"] == "given (40)" and res["n_inputs"] == 40
    assert res["max_abs_diff"] <= 1e-2 * max(1.0, res["max_abs_logit"])
    model = onnx.load(tmp_path / "h.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 I/O, fp16 inside
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    with pytest.raises(ConfigError, match="verify_inputs"):
        export(checkpoint=ckpt[0], out=tmp_path / "bad.onnx", verify_inputs=torch.zeros(2, 3, 16, 16))
    assert not (tmp_path / "bad.onnx").exists()


def test_quantized_export_is_qdq_and_step_exact(tmp_path, tinyq):
    arch = tinyq.arch({"op": [1, 0, 1], "ch": [0, 1, 0], "w": [0, 1, 2], "a": [0, 1, 0]})  # 2/4/8-bit weights, 4/8-bit acts
    out = tmp_path / "q.onnx"
    res = export(arch=arch, space=tinyq, out=out)
    assert res["precision"] == "int8" and res["verified"] and res["qdq_nodes"] > 0
    assert res["max_step_error"] == 0.0 and res["quantizers_checked"] >= 5 and res["top1_agreement"] == 1.0
    assert res["qdq_bit_mismatches"] == 0 and res["end_to_end_max_step_error"] >= 0
    model = onnx.load(out)
    weight_types = {onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    assert "INT8" in weight_types and "INT4" not in weight_types  # pre-quantized weights: exact integers in INT8
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    clips = [n for n in model.graph.node if n.op_type == "Clip"]  # 4-bit activations: clipped in float before the Q
    assert clips and all(producer.get(n.input[0]) != "QuantizeLinear" for n in clips)
    with pytest.raises(ConfigError, match="quantized"):
        export(arch=arch, space=tinyq, out=tmp_path / "f.onnx", precision="fp32")


def test_verification_fails_loudly_over_tolerance(tmp_path, ckpt):
    from spos_hw.nas.checkpoint import load_subnet

    out = tmp_path / "n.onnx"
    export(checkpoint=ckpt[0], out=out, verify=False)
    model = onnx.load(out)
    conv_w = next(t for t in model.graph.initializer if t.dims and len(t.dims) == 4)
    w = onnx.numpy_helper.to_array(conv_w) * 1.01
    conv_w.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), conv_w.name))
    net = load_subnet(ckpt[0])[0].eval()
    figures = compare(net, model, torch.randn(16, 1, 16, 16), precision="fp32", batch=1)
    assert figures["max_abs_diff"] > 1e-4
    with pytest.raises(VerificationError, match="max abs diff"):
        check(figures, "fp32")
    with pytest.raises(VerificationError, match="steps"):
        check({"n": 10, "ort_level": "all", "max_abs_diff": 0, "top1_agreement": 1.0, "max_step_error": 3.0}, "int8")


def test_bad_inputs_leave_no_file(tmp_path, ckpt, tiny10):
    path, arch = ckpt
    other = make_tiny("other")
    with pytest.raises(ArtifactMismatch, match="was made for space"):
        export(checkpoint=path, space=other, out=tmp_path / "a.onnx")
    wrong = tiny10.random_arch(np.random.default_rng(99))
    assert wrong != arch
    with pytest.raises(ArtifactMismatch, match="holds arch"):
        export(checkpoint=path, arch=wrong, space=tiny10, out=tmp_path / "a.onnx")
    with pytest.raises(ConfigError, match="give --calibrate N"):
        export(checkpoint=path, out=tmp_path / "a.onnx", precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_trt_without_tensorrt_keeps_the_verified_onnx(tmp_path, ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "net.engine"
    with pytest.raises(MissingDependency, match=r"'tensorrt' package.*spos-hw\[trt\]"):
        export(checkpoint=ckpt[0], format="trt", out=out)
    assert not out.exists()
    kept = tmp_path / "net.engine.onnx"
    assert kept.is_file() and props(kept)["spos_hw.precision"] == "fp32"
    assert [p.name for p in tmp_path.iterdir()] == ["net.engine.onnx"]  # no temp files left


@pytest.mark.trt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_matches_ort(tmp_path, ckpt, precision):
    out = tmp_path / "net.engine"
    cache = tmp_path / "timing.cache"
    res = export(
        checkpoint=ckpt[0], format="trt", out=out, precision=precision, dynamic_batch=True, batch_size=4, timing_cache=cache
    )
    assert res["trt_verified"] and out.stat().st_size > 0 and cache.is_file()


@pytest.mark.trt
def test_tensorrt_qdq_engine(tmp_path, tinyq):
    arch = tinyq.arch({"op": [1, 0, 1], "ch": [0, 1, 0], "w": [2, 2, 2], "a": [1, 1, 1]})  # int8 weights and activations
    res = export(arch=arch, space=tinyq, format="trt", out=tmp_path / "q.engine")
    assert res["trt_verified"]


@pytest.mark.parametrize("name", ["fbnet-small", "fbnet-small-w48a8"])
def test_mbconv_nets_with_skips_export_and_verify(tmp_path, name):
    """Grouped convs + shuffle, residuals and identity blocks export and match torch in ORT
    (fp32: within tolerance; Q/DQ: step-exact quantizers)."""
    from spos_hw.nas.spaces import get_space

    space = get_space(name)
    cycle = [1, 5, 4, 3, 0, 6, 7, 2]  # every candidate, with a skip at every other block that allows one
    ops = [8 if 8 in space.allowed_ops(p) and p.index % 2 else cycle[p.index % 8] for p in space.positions]
    assert ops.count(8) == 5
    spec = {"op": ops, "w": [i % 2 if o != 8 else 0 for i, o in enumerate(ops)]} if space.quantized else ops
    arch = space.arch(spec)
    path = write_checkpoint(tmp_path / "m.pt", space, arch)
    x = torch.rand(16, *space.input_shape, generator=torch.Generator().manual_seed(0))  # 16 inputs keep it fast
    res = export(checkpoint=path, out=tmp_path / "m.onnx", verify_inputs=x)
    assert res["verified"] and res["top1_agreement"] == 1.0 and res["n_inputs"] == 16
    if space.quantized:
        assert res["precision"] == "int8" and res["max_step_error"] == 0.0 and res["qdq_nodes"] > 0
    else:
        assert res["max_abs_diff"] <= 1e-4
