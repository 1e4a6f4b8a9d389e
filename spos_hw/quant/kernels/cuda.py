"""CUDA path of the fake-quant op: launches the Triton kernels of ``triton_fq`` (imported lazily, optional).

One program handles ``BLOCK`` elements of one row (a run of elements sharing a scale; see
``kernels.flat_layout``), so per-tensor and per-channel quantization are the same kernel.
fp32, fp16 and bf16 inputs are loaded, upcast to fp32, quantized in fp32 and stored back in
the input dtype (round to nearest even), exactly like the reference. The fp32 -> bf16
rounding is spelled out in integer operations (the standard ``+ 0x7FFF + lsb`` trick):
the interpreter's own cast truncates, and this way both give what torch gives.

Exactness on the GPU needs two things Triton does not give by default:

- a correctly rounded division: ``tl.div_rn`` (``div.rn.f32``); Triton's ``/`` is the
  approximate ``div.full.f32``;
- rounding half to even: ``v`` is first clamped to ``[lo - 1, hi + 1]`` (which changes no
  result, because everything beyond is clamped afterwards anyway), so ``|v| < 2^22`` and
  ``(v + 1.5 * 2^23) - 1.5 * 2^23`` is exactly ``rint(v)`` in fp32 round-to-nearest-even
  arithmetic. Unlike ``libdevice.rint`` this also runs under ``TRITON_INTERPRET=1``, which is
  how the kernels are tested on machines without a GPU.

The backward writes the STE gradient and one partial sum of the scale gradient per program;
the partials are reduced per channel in fp64 by torch (deterministic, no atomics).
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import Tensor

from spos_hw.quant.kernels import flat_layout, like_input, mode, unavailable

BLOCK = 4096
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.cache
def kernels():
    """The compiled (or, under ``TRITON_INTERPRET=1``, interpreted) Triton kernels."""
    from spos_hw.quant.kernels import triton_fq

    return triton_fq.fq_forward, triton_fq.fq_backward


def _available(x: Tensor) -> bool:
    if x.dtype not in _DTYPES or x.numel() == 0 or mode() == "reference":
        return False
    try:
        kernels()
    except ImportError as exc:
        unavailable("cuda", f"triton is not importable: {exc}")
        return False
    return True


def _launch_shape(inner: int, rows: int) -> tuple[int, int, int]:
    block = min(BLOCK, max(16, 1 << (max(inner, 1) - 1).bit_length()))
    per_row = -(-inner // block)
    return block, per_row, rows * per_row


def forward(x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None) -> Tensor | None:
    """Fake-quant on the tensor's device with the Triton kernel, or None when the reference must run."""
    if not _available(x):
        return None
    xk, rows, nch, inner = flat_layout(x, axis)
    block, per_row, programs = _launch_shape(inner, rows)
    y = torch.empty_like(xk)
    s = scale.detach().contiguous()
    fwd, _ = kernels()
    with torch.cuda.device_of(xk) if xk.is_cuda else contextlib.nullcontext():
        fwd[(programs,)](
            xk,
            y,
            s,
            inner,
            nch,
            per_row,
            float(qmin),
            float(qmax),
            float(zero_point),
            BLOCK=block,
            num_warps=8 if block >= 2048 else 4,
        )
    return y if xk is x else like_input(x, y)


def backward(
    grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None
) -> tuple[Tensor, Tensor] | None:
    """STE and LSQ gradients with the Triton kernel, or None when the reference must run."""
    if not _available(x) or grad.dtype not in _DTYPES:
        return None
    xk, rows, nch, inner = flat_layout(x, axis)
    g = grad
    if g.stride() != xk.stride():
        g = torch.empty_like(xk, dtype=grad.dtype)
        g.copy_(grad)
    block, per_row, programs = _launch_shape(inner, rows)
    gx = torch.empty_like(g)
    partial = torch.empty(programs, dtype=torch.float32, device=x.device)
    s = scale.detach().contiguous()
    _, bwd = kernels()
    with torch.cuda.device_of(xk) if xk.is_cuda else contextlib.nullcontext():
        bwd[(programs,)](
            g,
            xk,
            gx,
            s,
            partial,
            inner,
            nch,
            per_row,
            float(qmin),
            float(qmax),
            float(zero_point),
            BLOCK=block,
            num_warps=8 if block >= 2048 else 4,
        )
    gs = partial.view(rows // nch, nch, per_row).double().sum((0, 2)).to(scale.dtype).reshape(scale.shape)
    return (gx if xk is x else like_input(x, gx)), gs
