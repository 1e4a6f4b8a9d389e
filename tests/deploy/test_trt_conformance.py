"""The quantized export meets TensorRT's Q/DQ rules: every arch of the ``*-trt`` spaces passes
``check_trt``; the ORT-profile spaces fail only on their 8-bit unsigned (UINT8) activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spos_hw.deploy.fold import prequantize_weights
from spos_hw.deploy.onnx import export_onnx
from spos_hw.deploy.trt_check import check_trt
from spos_hw.nas.spaces import get_space
from spos_hw.nas.supernet import Supernet
from spos_hw.quant.layers import quantizers
from spos_hw.quant.onnx import ort_outputs

TRT_SPACES = ("resnet18-mixed-trt", "shufflenetv2-small-w48a8-trt", "fbnet-small-w48a8-trt")


def exported(name: str, seed: int):
    space = get_space(name)
    torch.manual_seed(seed)
    net = Supernet(space)
    arch = space.random_arch(np.random.default_rng(seed))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, *space.input_shape), arch)
    sub = net.eval().materialize(arch).eval()
    x = torch.randn(2, *space.input_shape, generator=torch.Generator().manual_seed(seed))
    model = export_onnx(sub, (x,))
    prequantize_weights(model)
    return sub, model, x


@pytest.mark.parametrize("name", TRT_SPACES)
def test_trt_profile_exports_pass_every_rule(name):
    for seed in (0, 1):
        sub, model, x = exported(name, seed)
        assert all(q.signed for q in quantizers(sub))  # the signed grid everywhere
        assert check_trt(model) == [], (name, seed)
        with torch.no_grad():
            ref = sub(x).numpy()
        (got,) = ort_outputs(model.SerializeToString(), (x,), "disable", threads=1)
        assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()


def test_ort_profile_fails_only_on_uint8_activations():
    _, model, _ = exported("resnet18-mixed", 0)
    found = check_trt(model)
    assert found and {v.rule for v in found} == {"dtype"} and all("UINT8" in v.message for v in found)


def test_trt_profile_keeps_fingerprints_apart_and_refuses_1bit_activations():
    assert get_space("resnet18-mixed-trt").fingerprint != get_space("resnet18-mixed").fingerprint
    assert "signed_activations" not in get_space("resnet18-mixed").to_json()
    from spos_hw.errors import QuantError
    from spos_hw.quant.layers import quant_layers

    with pytest.raises(QuantError, match="TensorRT profile takes activation bits"):
        quant_layers(get_space("resnet18-mixed").__class__(**{**_fields("resnet18-mixed-trt"), "abits": (1, 2)}), bn_affine=True)


def _fields(name):
    import dataclasses

    space = get_space(name)
    return {f.name: getattr(space, f.name) for f in dataclasses.fields(space)}
