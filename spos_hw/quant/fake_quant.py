"""The fake-quant op: ONNX QuantizeLinear + DequantizeLinear in one differentiable step.

Forward, exactly ONNX's formula (so it is bit-exact with ONNX Runtime's Q/DQ)::

    q = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)    # true division
    y = (q - zero_point) * scale

computed in fp32. fp16/bf16 inputs are upcast, quantized in fp32 and the result is rounded
back to the input dtype (round to nearest even); "bit-exact" for half types means equal to
that. The scale is per tensor (``axis=None``, one element) or per channel along ``axis``.
A 1-bit *signed* quantizer is the binary sign quantizer ``y = scale * (x >= 0 ? 1 : -1)``;
1-bit unsigned is the ordinary formula with ``q in {0, 1}``.

Backward: straight-through estimator for ``x`` (the gradient passes where
``qmin <= x / scale + zero_point <= qmax`` and is zero where clipped) and the LSQ gradient
for the scale (per element ``round(v) - v`` inside, ``qmin - zp`` or ``qmax - zp`` where
clipped, times the incoming gradient, summed per tensor or per channel). The LSQ gradient
*scaling* ``1 / sqrt(numel * qmax)`` is a training policy, applied by the layers with
``grad_scale``; the op returns the plain estimator gradient.

Both ops are torch.library custom ops with fake implementations and registered
autograd, so they run under ``torch.compile`` and export (``spos_hw.quant.onnx`` lowers them
to Q/DQ). Kernels are picked by device: a compiled C kernel on CPU (``kernels.cpu``), Triton
on CUDA (``kernels.cuda``), the torch reference elsewhere. In plain eager execution
``fake_quant`` reaches the same kernels through a ``torch.autograd.Function`` instead of the
custom-op dispatcher, whose Python layers cost about 1 ms per forward+backward (measured:
2.7x less overhead), which is most of the cost on small activations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import FakeTensor

from spos_hw.errors import QuantError
from spos_hw.quant.kernels import cpu, cuda

BITS = tuple(range(1, 9))
"""Bit widths the op quantizes to. Layers use 32 for "not quantized" and never call the op."""

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)`` of a bit width: ``[-2^(b-1), 2^(b-1) - 1]`` or ``[0, 2^b - 1]``.

    1-bit signed has no integer range: it is the sign quantizer (see ``fake_quant``).
    """
    check_bits(bits)
    if signed:
        if bits == 1:
            raise QuantError("1-bit signed quantization is the sign quantizer; it has no integer range")
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
        raise QuantError(f"bit width {bits!r} is not supported; allowed: 1..8 (32 means no quantization in the layers)")


# ----------------------------------------------------------------------------- validation


def _check_args(x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None) -> None:
    """Static checks (shapes, dtypes, ranges): no device synchronisation."""
    if x.dtype not in DTYPES:
        raise QuantError(f"fake_quant: input dtype {x.dtype} is not supported; use float32, float16 or bfloat16")
    if scale.dtype != torch.float32:
        raise QuantError(f"fake_quant: scale must be float32, got {scale.dtype}")
    if scale.device != x.device:
        raise QuantError(f"fake_quant: scale is on {scale.device} but the input is on {x.device}")
    if not (-128 <= qmin < qmax <= 127 or 0 <= qmin < qmax <= 255):
        raise QuantError(f"fake_quant: integer range [{qmin}, {qmax}] does not fit 8 bits (int8 or uint8)")
    if not qmin <= zero_point <= qmax:
        raise QuantError(f"fake_quant: zero point {zero_point} is outside [{qmin}, {qmax}]")
    _check_scale_shape(x, scale, axis)


def _check_scale_shape(x: Tensor, scale: Tensor, axis: int | None) -> None:
    if axis is None:
        if scale.numel() != 1:
            raise QuantError(
                f"fake_quant: a per-tensor scale has one element, got shape {list(scale.shape)} (pass axis for per-channel)"
            )
        return
    if not -x.dim() <= axis < x.dim():
        raise QuantError(f"fake_quant: axis {axis} is out of range for a {x.dim()}-d input")
    if scale.dim() != 1 or scale.numel() != x.shape[axis]:
        raise QuantError(
            f"fake_quant: a per-channel scale along axis {axis} needs shape [{x.shape[axis]}], got {list(scale.shape)}"
        )


def _check_scale_values(scale: Tensor) -> None:
    """A zero, negative or non-finite scale is a user error (one sync on accelerators)."""
    if scale.device.type == "meta":
        return
    ok = torch.isfinite(scale) & (scale > 0)
    if not bool(ok.all()):
        bad = scale.detach().reshape(-1)[~ok.reshape(-1)][0].item()
        raise QuantError(f"fake_quant: scale must be finite and > 0, got {bad}")


def _norm_axis(x: Tensor, axis: int | None) -> int | None:
    return None if axis is None else axis % x.dim()


# ----------------------------------------------------------------------------- reference


def scale_view(scale: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """The scale shaped to broadcast against ``x`` (per tensor or along ``axis``)."""
    if axis is None:
        return scale.reshape(())
    shape = [1] * x.dim()
    shape[axis % x.dim()] = -1
    return scale.reshape(shape)


def _reduce_like_scale(t: Tensor, scale: Tensor, axis: int | None) -> Tensor:
    if axis is None:
        return t.sum().reshape(scale.shape)
    axis = axis % t.dim()
    dims = [d for d in range(t.dim()) if d != axis]
    return (t.sum(dims) if dims else t).reshape(scale.shape)


def reference_forward(x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None) -> Tensor:
    """The formula in plain torch ops: the definition every kernel is checked against."""
    s = scale_view(scale, x, axis)
    v = x.float() / s
    q = torch.clamp(torch.round(v) + float(zero_point), float(qmin), float(qmax))
    return ((q - float(zero_point)) * s).to(x.dtype)


def reference_backward(
    grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None
) -> tuple[Tensor, Tensor]:
    """STE gradient for ``x`` and LSQ gradient for ``scale`` (unscaled)."""
    s = scale_view(scale, x, axis)
    v = x.float() / s
    lo, hi = float(qmin - zero_point), float(qmax - zero_point)
    inside = (v >= lo) & (v <= hi)
    grad_x = torch.where(inside, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
    t = torch.where(v < lo, lo, torch.where(v > hi, hi, torch.round(v) - v))
    return grad_x, _reduce_like_scale(grad.float() * t, scale, axis)


def reference_sign_forward(x: Tensor, scale: Tensor, axis: int | None) -> Tensor:
    s = scale_view(scale, x, axis)
    return torch.where(x >= 0, s, -s).to(x.dtype)


def reference_sign_backward(grad: Tensor, x: Tensor, scale: Tensor, axis: int | None) -> tuple[Tensor, Tensor]:
    s = scale_view(scale, x, axis)
    v = x.float() / s
    inside = (v >= -1.0) & (v <= 1.0)
    grad_x = torch.where(inside, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
    sign = torch.where(x >= 0, 1.0, -1.0)
    return grad_x, _reduce_like_scale(grad.float() * sign, scale, axis)


# ----------------------------------------------------------------------------- the ops


def run_forward(x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None) -> Tensor:
    """The forward on ``x``'s device: the fast kernel when there is one, else the reference.

    ``axis`` must be normalised (non-negative). Both the custom op's device kernels and the
    eager fast path of ``fake_quant`` run this, so they cannot differ.
    """
    dev = x.device.type
    out = cpu.forward(x, scale, qmin, qmax, zero_point, axis) if dev == "cpu" else None
    if dev == "cuda":
        out = cuda.forward(x, scale, qmin, qmax, zero_point, axis)
    return reference_forward(x, scale, qmin, qmax, zero_point, axis) if out is None else out


def run_backward(
    grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None
) -> tuple[Tensor, Tensor]:
    """The backward on ``x``'s device (see ``run_forward``)."""
    dev = x.device.type
    out = cpu.backward(grad, x, scale, qmin, qmax, zero_point, axis) if dev == "cpu" else None
    if dev == "cuda":
        out = cuda.backward(grad, x, scale, qmin, qmax, zero_point, axis)
    return reference_backward(grad, x, scale, qmin, qmax, zero_point, axis) if out is None else out


@torch.library.custom_op("spos_hw::fake_quant", mutates_args=())
def fake_quant_op(
    x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None, check: bool = True
) -> Tensor:
    """Q/DQ with integer range ``[qmin, qmax]``, kernel by device (see ``run_forward``).

    ``check`` validates the scale's values (one device synchronisation on accelerators).
    """
    _check_args(x, scale, qmin, qmax, zero_point, axis)
    if check:
        _check_scale_values(scale)
    return run_forward(x, scale, qmin, qmax, zero_point, _norm_axis(x, axis))


@fake_quant_op.register_fake
def _fake_quant_fake(x, scale, qmin, qmax, zero_point, axis, check=True):
    _check_args(x, scale, qmin, qmax, zero_point, axis)
    return torch.empty_like(x)


@torch.library.custom_op("spos_hw::fake_quant_backward", mutates_args=())
def fake_quant_backward_op(
    grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int, zero_point: int, axis: int | None
) -> tuple[Tensor, Tensor]:
    """Gradients of ``fake_quant`` for ``x`` (STE) and ``scale`` (LSQ, unscaled)."""
    return run_backward(grad, x, scale, qmin, qmax, zero_point, _norm_axis(x, axis))


@fake_quant_backward_op.register_fake
def _fake_quant_backward_fake(grad, x, scale, qmin, qmax, zero_point, axis):
    return torch.empty_like(grad), torch.empty_like(scale)


def _fq_setup(ctx, inputs, output) -> None:
    x, scale, qmin, qmax, zero_point, axis, _ = inputs
    ctx.save_for_backward(x, scale)
    ctx.args = (qmin, qmax, zero_point, axis)


def _fq_backward(ctx, grad):
    x, scale = ctx.saved_tensors
    grad_x, grad_scale = fake_quant_backward_op(grad, x, scale, *ctx.args)
    return grad_x, grad_scale, None, None, None, None, None


torch.library.register_autograd("spos_hw::fake_quant", _fq_backward, setup_context=_fq_setup)


@torch.library.custom_op("spos_hw::sign_quant", mutates_args=())
def sign_quant_op(x: Tensor, scale: Tensor, axis: int | None, check: bool = True) -> Tensor:
    """Binary sign quantizer ``scale * (x >= 0 ? 1 : -1)``: torch ops on every device (one select)."""
    _check_args(x, scale, -1, 1, 0, axis)
    if check:
        _check_scale_values(scale)
    return reference_sign_forward(x, scale, _norm_axis(x, axis))


@sign_quant_op.register_fake
def _sign_quant_fake(x, scale, axis, check=True):
    _check_args(x, scale, -1, 1, 0, axis)
    return torch.empty_like(x)


@torch.library.custom_op("spos_hw::sign_quant_backward", mutates_args=())
def sign_quant_backward_op(grad: Tensor, x: Tensor, scale: Tensor, axis: int | None) -> tuple[Tensor, Tensor]:
    return reference_sign_backward(grad, x, scale, _norm_axis(x, axis))


@sign_quant_backward_op.register_fake
def _sign_quant_backward_fake(grad, x, scale, axis):
    return torch.empty_like(grad), torch.empty_like(scale)


def _sign_setup(ctx, inputs, output) -> None:
    x, scale, axis, _ = inputs
    ctx.save_for_backward(x, scale)
    ctx.axis = axis


def _sign_backward(ctx, grad):
    x, scale = ctx.saved_tensors
    grad_x, grad_scale = sign_quant_backward_op(grad, x, scale, ctx.axis)
    return grad_x, grad_scale, None, None


torch.library.register_autograd("spos_hw::sign_quant", _sign_backward, setup_context=_sign_setup)


# ----------------------------------------------------------------------------- public API


def fake_quant(
    x: Tensor, scale: Tensor, *, bits: int, signed: bool, axis: int | None = None, zero_point: int = 0, check: bool = True
) -> Tensor:
    """Quantize-dequantize ``x`` to ``bits`` (1..8) with ``scale`` (per tensor, or per channel along ``axis``).

    Signed ranges are ``[-2^(b-1), 2^(b-1) - 1]`` (1-bit signed: the sign quantizer), unsigned
    ``[0, 2^b - 1]``. Differentiable in ``x`` (STE) and ``scale`` (LSQ). ``check=False`` skips
    validating the scale's values, which costs a device synchronisation on GPUs (the layers
    skip it in training, where the step size is clamped positive).

    Example:
        >>> y = fake_quant(w, s, bits=4, signed=True, axis=0)      # per-output-channel weights
        >>> a = fake_quant(h, t, bits=2, signed=False)              # per-tensor activations
    """
    check_bits(bits)
    eager = _eager(x, scale)
    if bits == 1 and signed:
        if zero_point:
            raise QuantError("the 1-bit sign quantizer has no zero point")
        if not eager:
            return sign_quant_op(x, scale, axis, check)
        _check_args(x, scale, -1, 1, 0, axis)
        if check:
            _check_scale_values(scale)
        return _SignEager.apply(x, scale, _norm_axis(x, axis))
    qmin, qmax = quant_range(bits, signed)
    if not eager:
        return fake_quant_op(x, scale, qmin, qmax, int(zero_point), axis, check)
    _check_args(x, scale, qmin, qmax, zero_point, axis)
    if check:
        _check_scale_values(scale)
    return _FakeQuantEager.apply(x, scale, qmin, qmax, int(zero_point), _norm_axis(x, axis))


def _eager(x: Tensor, scale: Tensor) -> bool:
    """Plain eager tensors on CPU/CUDA: the fast path applies (not while compiling or exporting)."""
    return (
        x.device.type in ("cpu", "cuda")
        and not torch.compiler.is_compiling()
        and not isinstance(x, FakeTensor)
        and not isinstance(scale, FakeTensor)
    )


class _FakeQuantEager(torch.autograd.Function):
    """``fake_quant_op`` with its registered autograd, minus the custom-op dispatcher."""

    @staticmethod
    def forward(ctx, x, scale, qmin, qmax, zero_point, axis):
        ctx.save_for_backward(x, scale)
        ctx.args = (qmin, qmax, zero_point, axis)
        return run_forward(x, scale, qmin, qmax, zero_point, axis)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        grad_x, grad_scale = run_backward(grad, x, scale, *ctx.args)
        return grad_x, grad_scale, None, None, None, None


class _SignEager(torch.autograd.Function):
    """``sign_quant_op`` with its registered autograd, minus the custom-op dispatcher."""

    @staticmethod
    def forward(ctx, x, scale, axis):
        ctx.save_for_backward(x, scale)
        ctx.axis = axis
        return reference_sign_forward(x, scale, axis)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        grad_x, grad_scale = reference_sign_backward(grad, x, scale, ctx.axis)
        return grad_x, grad_scale, None


class _GradScale(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``factor`` (LSQ's step-size gradient scaling)."""

    @staticmethod
    def forward(ctx, t: Tensor, factor: float) -> Tensor:  # ctx style: no per-call signature binding
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.factor, None


def grad_scale(t: Tensor, factor: float) -> Tensor:
    """``t`` unchanged, with its gradient multiplied by ``factor`` (identity outside autograd)."""
    if not (torch.is_grad_enabled() and t.requires_grad):
        return t
    return _GradScale.apply(t, factor)


def lsq_grad_factor(elements_per_scale: int, bits: int, signed: bool) -> float:
    """LSQ's step-size gradient scale ``1 / sqrt(N * Q_p)`` (N elements share one scale)."""
    qp = 1 if bits == 1 else quant_range(bits, signed)[1]
    return 1.0 / math.sqrt(max(1, elements_per_scale) * qp)


__all__ = [
    "BITS",
    "check_bits",
    "fake_quant",
    "fake_quant_op",
    "grad_scale",
    "lsq_grad_factor",
    "quant_range",
    "reference_backward",
    "reference_forward",
    "sign_quant_op",
]
