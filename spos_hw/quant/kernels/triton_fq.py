"""The Triton kernels of the fake-quant op (imported only when a CUDA kernel runs).

Kept in their own module because Triton resolves the names a kernel calls in the module's
globals (a helper defined in a closure is invisible to it). See ``kernels.cuda``.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rint_near_range(v, lo, hi):
    # rint(v), half to even, wherever it can matter: v is clamped to [lo - 1, hi + 1] first
    # (beyond that everything clamps anyway), so |v| < 2**22 and adding then subtracting
    # 1.5 * 2**23 rounds exactly in fp32 round-to-nearest-even arithmetic
    vc = tl.minimum(tl.maximum(v, lo - 1.0), hi + 1.0)
    return (vc + 12582912.0) - 12582912.0


@triton.jit
def load_block(x_ptr, s_ptr, inner, nch, blocks_per_row, BLOCK: tl.constexpr):
    # program `pid` covers BLOCK elements of row `pid // blocks_per_row` (rows share a scale,
    # row r uses scale r % nch); returns offsets, mask, the scale and v = x / s (correctly rounded)
    pid = tl.program_id(0).to(tl.int64)
    row = pid // blocks_per_row
    offs = (pid % blocks_per_row) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < inner
    ptr = row * inner + offs
    s = tl.load(s_ptr + row % nch)
    x = tl.load(x_ptr + ptr, mask=mask, other=0.0).to(tl.float32)
    return pid, ptr, mask, s, tl.div_rn(x, s)


@triton.jit
def fq_forward(x_ptr, y_ptr, s_ptr, inner, nch, blocks_per_row, qmin, qmax, zp, BLOCK: tl.constexpr):
    pid, ptr, mask, s, v = load_block(x_ptr, s_ptr, inner, nch, blocks_per_row, BLOCK)
    r = rint_near_range(v, qmin - zp, qmax - zp)
    q = tl.minimum(tl.maximum(r + zp, qmin), qmax)
    y = (q - zp) * s
    y = tl.where(v != v, v, y)  # NaN in, NaN out (GPU min/max drop NaNs)
    if y_ptr.dtype.element_ty == tl.bfloat16:
        # fp32 -> bf16 round-to-nearest-even in integer ops: what torch and cvt.rn.bf16.f32 do,
        # written out because the interpreter's own bf16 cast truncates
        b = y.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        b = tl.where(y != y, 0x7FC0, b)
        tl.store(y_ptr + ptr, b.to(tl.uint16).to(tl.bfloat16, bitcast=True), mask=mask)
    else:
        tl.store(y_ptr + ptr, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def fq_backward(g_ptr, x_ptr, gx_ptr, s_ptr, part_ptr, inner, nch, blocks_per_row, qmin, qmax, zp, BLOCK: tl.constexpr):
    pid, ptr, mask, s, v = load_block(x_ptr, s_ptr, inner, nch, blocks_per_row, BLOCK)
    g_raw = tl.load(g_ptr + ptr, mask=mask, other=0.0)
    g = g_raw.to(tl.float32)
    lo = qmin - zp
    hi = qmax - zp
    inside = (v >= lo) & (v <= hi)
    r = rint_near_range(v, lo, hi)
    t = tl.where(v < lo, lo, tl.where(v > hi, hi, r - v))
    tl.store(gx_ptr + ptr, tl.where(inside, g_raw, tl.zeros_like(g_raw)), mask=mask)
    tl.store(part_ptr + pid, tl.sum(tl.where(mask, g * t, 0.0), axis=0))
