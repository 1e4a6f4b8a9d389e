"""Quantizing layers: the bit widths are a forward-time argument, so one weight serves every choice.

Layered like Brevitas: the op (``fake_quant``) -> a quantizer module (``LsqQuantizer``, one
learned step size) -> the layers (``QuantConv2d``, ``QuantLinear``, ``BitsBatchNorm2d``),
which hold one quantizer per bit width and pick it from ``bits=(w, a)`` at every call.

- Weights: signed, symmetric (zero point 0), per output channel, range
  ``[-2^(b-1), 2^(b-1) - 1]``; 1-bit weights use the sign quantizer.
- Input activations: per tensor. Unsigned ``[0, 2^b - 1]`` when the input is non-negative
  (it follows a ReLU: every block input, every conv after conv+BN+ReLU, the classifier after
  pooling); signed when it can be negative (the network input in the stem, a conv after a
  BN without ReLU such as ShuffleNet's depthwise convs). The block builders pass this as
  ``signed_input`` (``nas.blocks``). 1-bit unsigned activations are ``{0, s}``; 1-bit
  signed activations use the sign quantizer. In the TensorRT profile
  (``space.signed_activations``, the ``*-trt`` spaces) every activation is on the signed
  grid, as TensorRT's INT8 runs it: ``qmax = 2^(b-1) - 1`` on post-ReLU inputs too.
- Step sizes (LSQ): one per bit width (``wq.b4.scale``, ``aq.b2.scale``), initialised at
  first use from the full weight (``2 mean|w| / sqrt(Qp)`` per channel; ``mean|w|`` for the
  sign quantizer) or from the first batch (``2 mean|x| / sqrt(Qp)``, averaged over ranks
  under torch.distributed); their gradients are scaled by ``1 / sqrt(N Qp)`` in training.
  Keys are identical in the supernet and a materialized subnet, which copies them
  (per-channel ones first-n sliced, like the weights).
- BN: one ``SliceBatchNorm2d`` per ``(w, a)`` choice, because statistics differ between bit
  widths; BN recalibration resets and recomputes exactly the ones a candidate uses.
- 32 bits means not quantized: no quantizer is built or called for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spos_hw.errors import QuantError
from spos_hw.nn.bits import FULL_PRECISION
from spos_hw.nn.factory import Layers
from spos_hw.nn.layers import Linear, SliceBatchNorm2d, SliceConv2d
from spos_hw.quant.fake_quant import check_bits, fake_quant, grad_scale, lsq_grad_factor, quant_range

EPS = 1e-8
"""Smallest step size used in training (the parameter is clamped to it, never below)."""


class LsqQuantizer(nn.Module):
    """A learned-step-size quantizer of one bit width: per tensor, or per channel along axis 0."""

    def __init__(self, bits: int, *, signed: bool, channels: int | None = None) -> None:
        super().__init__()
        check_bits(bits)
        self.bits, self.signed, self.channels = bits, signed, channels
        self.qmax = 1 if bits == 1 else quant_range(bits, signed)[1]
        self.scale = nn.Parameter(torch.ones(channels) if channels else torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready = False
        self.sync_init = True
        """Average a per-tensor initialisation over torch.distributed ranks (training: every rank runs
        the same path). Search turns it off: ranks score different candidates, and a collective
        there would pair one rank's candidate with another's (or hang)."""

    def extra_repr(self) -> str:
        per = f"channels={self.channels}" if self.channels else "per-tensor"
        return f"bits={self.bits}, signed={self.signed}, {per}"

    @torch.no_grad()
    def initialize(self, source: Tensor) -> None:
        """Set the step size from ``source`` (the full weight, or a batch of inputs)."""
        a = source.detach().float().abs()
        m = a.flatten(1).mean(1) if self.channels else a.mean()
        s = m if (self.bits == 1 and self.signed) else 2 * m / self.qmax**0.5
        if self.sync_init and not self.channels and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(s)
            s /= torch.distributed.get_world_size()
        self.scale.copy_(s.clamp_min(EPS).to(self.scale.device))
        self.initialized.fill_(True)
        self._ready = True

    def ensure_initialized(self, source: Tensor) -> None:
        """Initialise at first use (not while compiling or exporting: call once eagerly first)."""
        if self._ready or source.is_meta or torch.compiler.is_compiling():
            return
        if bool(self.initialized):  # one read, then cached in _ready
            self._ready = True
            return
        self.initialize(source)

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp the step size to >= ``EPS`` in place (after each optimizer step).

        Clamping only inside the forward leaves an SGD step free to push the parameter below
        zero, where the clamp's zero gradient keeps it for good (a dead channel in training)
        and an evaluation forward refuses it.
        """
        self.scale.clamp_(min=EPS)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._ready = False  # re-read `initialized` after a load
        super()._load_from_state_dict(*args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        s = self.scale
        axis = None
        if self.channels:
            axis = 0
            if x.shape[0] != s.shape[0]:
                s = s[: x.shape[0]]
        training = self.training and torch.is_grad_enabled()
        if training:  # clamped positive: no need to validate (and synchronise) every step
            s = grad_scale(s.clamp_min(EPS), lsq_grad_factor(x.numel() // s.numel(), self.bits, self.signed))
        return fake_quant(x, s, bits=self.bits, signed=self.signed, axis=axis, check=not training)


def _quantizers(bits: Iterable[int], **kw) -> nn.ModuleDict:
    return nn.ModuleDict({f"b{b}": LsqQuantizer(b, **kw) for b in sorted(set(bits)) if b != FULL_PRECISION})


def _pick(quantizers: nn.ModuleDict, bits: int, what: str) -> LsqQuantizer | None:
    if bits == FULL_PRECISION:
        return None
    q = quantizers[f"b{bits}"] if f"b{bits}" in quantizers else None  # noqa: SIM401 (a ModuleDict has no .get)
    if q is None:
        have = ", ".join(k[1:] for k in quantizers) or "none"
        raise QuantError(f"this layer has no {bits}-bit {what} quantizer; its {what} bit choices are {have} (or 32)")
    return q


def _split(bits) -> tuple[int, int]:
    if bits is None:
        raise QuantError("a quantized layer needs bits=(weight_bits, act_bits) at forward time")
    w, a = bits
    return int(w), int(a)


class _QuantMixin:
    """Weight and input quantization shared by the conv and linear layers."""

    wq: nn.ModuleDict
    aq: nn.ModuleDict
    weight: nn.Parameter

    def _setup_quant(self, out_channels: int, wbits: Sequence[int], abits: Sequence[int], signed_input: bool) -> None:
        self.signed_input = signed_input
        self.wq = _quantizers(wbits, signed=True, channels=out_channels)
        self.aq = _quantizers(abits, signed=signed_input)

    def _quant_input(self, x: Tensor, abits: int) -> Tensor:
        q = _pick(self.aq, abits, "activation")
        if q is None:
            return x
        q.ensure_initialized(x)
        return q(x)

    def _quant_weight(self, w: Tensor, wbits: int) -> Tensor:
        q = _pick(self.wq, wbits, "weight")
        if q is None:
            return w
        q.ensure_initialized(self.own_weight())  # the layer's own channels and kernel, even when shared
        return q(w)


class QuantConv2d(_QuantMixin, SliceConv2d):
    """``SliceConv2d`` with per-bit-width weight (per channel) and input (per tensor) fake-quant."""

    def __init__(
        self,
        cin: int,
        cout: int,
        k: int,
        stride: int = 1,
        groups: int = 1,
        *,
        wbits: Sequence[int],
        abits: Sequence[int],
        signed_input: bool = False,
    ) -> None:
        SliceConv2d.__init__(self, cin, cout, k, stride, groups)
        self._setup_quant(cout, wbits, abits, signed_input)

    def forward(self, x: Tensor, out_channels: int | None = None, bits=None) -> Tensor:
        wb, ab = _split(bits)
        w, groups = self.sliced_weight(x.shape[1], out_channels)
        x = self._quant_input(x, ab)
        return F.conv2d(x, self._quant_weight(w, wb), None, self.stride, self.padding, 1, groups)


class QuantLinear(_QuantMixin, Linear):
    """``Linear`` with per-bit-width weight (per output feature) and input (per tensor) fake-quant."""

    def __init__(
        self, cin: int, cout: int, bias: bool = False, *, wbits: Sequence[int], abits: Sequence[int], signed_input: bool = False
    ) -> None:
        Linear.__init__(self, cin, cout, bias=bias)
        self._setup_quant(cout, wbits, abits, signed_input)

    def forward(self, x: Tensor, bits=None) -> Tensor:
        wb, ab = _split(bits)
        return F.linear(self._quant_input(x, ab), self._quant_weight(self.weight, wb), self.bias)


def bits_key(bits) -> str:
    w, a = _split(bits)
    return f"w{w}a{a}"


class BitsBatchNorm2d(nn.Module):
    """One ``SliceBatchNorm2d`` per ``(weight bits, activation bits)`` choice, picked at forward time."""

    def __init__(self, channels: int, choices: Sequence[tuple[int, int]], *, affine: bool) -> None:
        super().__init__()
        self.bns = nn.ModuleDict({bits_key(b): SliceBatchNorm2d(channels, affine=affine) for b in choices})

    def forward(self, x: Tensor, bits=None) -> Tensor:
        key = bits_key(bits)
        if key not in self.bns:
            raise QuantError(f"this BN has no statistics for {key}; its choices are {', '.join(self.bns)}")
        return self.bns[key](x)


def _check_choices(choices: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = sorted({(int(w), int(a)) for w, a in choices})
    if not out:
        raise QuantError("a quantized layer needs at least one (weight bits, activation bits) choice")
    for w, a in out:
        for b in (w, a):
            if b != FULL_PRECISION:
                check_bits(b)
    return out


def quant_layers(space, *, bn_affine: bool, bits_choices: Sequence[tuple[int, int]] | None = None) -> Layers:
    """Layer factories for a quantized space; every layer holds quantizers/BN for ``bits_choices``.

    ``bits_choices`` defaults to every ``(w, a)`` of the space plus its fixed stem/head bits.
    """
    if bits_choices is None:
        bits_choices = [(w, a) for w in space.wbits for a in space.abits] + [tuple(space.fixed_bits)]
    choices = _check_choices(bits_choices)
    wbits = [w for w, _ in choices]
    abits = [a for _, a in choices]
    all_signed = bool(getattr(space, "signed_activations", False))  # the TensorRT profile
    if all_signed and 1 in abits:
        raise QuantError(
            "1-bit activations on the signed grid (signed_activations) are the sign quantizer, constant on "
            "non-negative inputs; the TensorRT profile takes activation bits 2..8"
        )

    def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, *, signed_input: bool = False) -> QuantConv2d:
        signed = signed_input or all_signed
        return QuantConv2d(cin, cout, k, stride, groups, wbits=wbits, abits=abits, signed_input=signed)

    def bn(c: int) -> BitsBatchNorm2d:
        return BitsBatchNorm2d(c, choices, affine=bn_affine)

    def linear(cin: int, cout: int, bias: bool = False, *, signed_input: bool = False) -> QuantLinear:
        return QuantLinear(cin, cout, bias, wbits=wbits, abits=abits, signed_input=signed_input or all_signed)

    return Layers(conv=conv, bn=bn, linear=linear)


def quantizers(module: nn.Module) -> list[LsqQuantizer]:
    """Every step-size quantizer inside ``module``."""
    return [m for m in module.modules() if isinstance(m, LsqQuantizer)]


__all__ = [
    "BitsBatchNorm2d",
    "LsqQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "bits_key",
    "quant_layers",
    "quantizers",
]
