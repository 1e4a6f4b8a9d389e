"""The Triton (CUDA) kernels: bit-exact against the reference under TRITON_INTERPRET=1 on the CPU,
and, where a GPU exists, on the device itself."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[2]
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")

# Runs in a fresh interpreter: TRITON_INTERPRET must be set before the kernels are defined.
_SCRIPT = r"""
import json, torch
from spos_hw.quant.kernels import cuda
from spos_hw.quant.fake_quant import reference_forward, reference_backward

def differ(a, b):  # bit patterns differ, NaN payloads aside
    a, b = a.float().contiguous(), b.float().contiguous()
    return int(((a.view(torch.int32) != b.view(torch.int32)) & ~(a.isnan() & b.isnan())).sum())

g = torch.Generator().manual_seed(0)
out = []
cases = [
    ((3, 1000), None, -8, 7, 0),          # per tensor, several programs of a partial block
    ((2, 4, 33, 33), None, 0, 255, 0),    # per tensor, odd size
    ((9, 4, 3, 3), 0, -4, 3, 0),          # per channel (weights)
    ((5, 6, 7), 1, 0, 15, 3),             # per channel along an inner axis, zero point
    ((70,), None, -128, 127, 0),          # specials
]
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    for shape, axis, qmin, qmax, zp in cases:
        n = 1 if axis is None else shape[axis]
        s = (torch.rand(n, generator=g) * 0.1 + 0.01) if axis is not None else torch.tensor([0.0625])
        x = torch.randn(shape, generator=g) * 0.5
        flat = x.view(-1)
        flat[:40] = (torch.arange(40) - 20 + 0.5) * 0.0625              # exact ties
        if len(shape) == 1:
            flat[40:46] = torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0, 1e30, -1e-30])
        if len(shape) == 4:
            x = x.to(memory_format=torch.channels_last)
        x = x.to(dtype)
        y = cuda.forward(x, s, qmin, qmax, zp, axis)
        r = reference_forward(x, s, qmin, qmax, zp, axis)
        grad = torch.randn(x.shape, generator=g).to(dtype)
        gx, gs = cuda.backward(grad, x, s, qmin, qmax, zp, axis)
        rgx, rgs = reference_backward(grad, x, s, qmin, qmax, zp, axis)
        finite = torch.isfinite(rgs)
        out.append(dict(
            case=f"{dtype} {shape} axis={axis} [{qmin},{qmax}] zp={zp}",
            fwd=differ(y, r), stride=y.stride() == torch.empty_like(x).stride(),
            gx=differ(gx, rgx),
            gs=float(((gs - rgs)[finite].abs() / (rgs[finite].abs() + 1)).max()) if finite.any() else 0.0,
            gs_nan=bool(torch.equal(torch.isnan(gs), torch.isnan(rgs))),
        ))
print(json.dumps(out))
"""


@needs_triton
def test_triton_kernels_bit_exact_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(rows) == 15
    for row in rows:
        assert row["fwd"] == 0 and row["gx"] == 0 and row["stride"] and row["gs_nan"], row
        assert row["gs"] < 1e-4, row


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_op_bit_exact_on_device(dtype):
    from spos_hw.quant.fake_quant import fake_quant, quant_range, reference_backward, reference_forward

    g = torch.Generator().manual_seed(1)
    x = (torch.randn(64, 32, 16, 16, generator=g) * 0.3).to(dtype)
    w = torch.randn(64, 32, 3, 3, generator=g).to(dtype)
    s, ws = torch.tensor(0.05), torch.rand(64, generator=g) * 0.05 + 0.01
    for inp, scale, axis, bits, signed in ((x, s, None, 4, False), (x, s, None, 8, True), (w, ws, 0, 3, True)):
        xc = inp.cuda().requires_grad_()
        sc = scale.cuda().requires_grad_()
        y = fake_quant(xc, sc, bits=bits, signed=signed, axis=axis)
        qmin, qmax = quant_range(bits, signed)
        assert torch.equal(y.cpu(), reference_forward(inp, scale, qmin, qmax, 0, axis))
        grad = torch.randn(inp.shape, generator=g).to(dtype)
        y.backward(grad.cuda())
        rgx, rgs = reference_backward(grad, inp, scale, qmin, qmax, 0, axis)
        assert torch.equal(xc.grad.cpu(), rgx)
        torch.testing.assert_close(sc.grad.cpu(), rgs, rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
def test_cuda_op_under_compile():
    from spos_hw.quant.fake_quant import fake_quant

    x = torch.randn(1000, device="cuda", requires_grad=True)
    s = torch.tensor(0.1, device="cuda", requires_grad=True)
    f = torch.compile(lambda x, s: fake_quant(x, s, bits=4, signed=True).sum(), backend="aot_eager")
    f(x, s).backward()
    assert x.grad is not None and s.grad is not None
