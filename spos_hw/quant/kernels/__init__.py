"""Kernels behind the fake-quant op, one module per device type (``cpu``: C, ``cuda``: Triton).

Which implementation runs is set by the environment variable ``SPOS_HW_FAKE_QUANT_KERNEL``:

- ``auto`` (default): the fast kernel. If it cannot be made available here (no C compiler,
  the compile fails, triton is not installed), one warning is logged and the torch
  reference runs instead: same results, slower.
- ``native``: the fast kernel or an error (``RuntimeUnavailable``); never the reference.
- ``reference``: always the torch reference.

An error raised while a kernel *runs* always propagates; only unavailability falls back.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import Tensor

from spos_hw.errors import QuantError, RuntimeUnavailable

log = logging.getLogger(__name__)

ENV = "SPOS_HW_FAKE_QUANT_KERNEL"
MODES = ("auto", "native", "reference")
_warned: set[str] = set()


def mode() -> str:
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise QuantError(f"{ENV}={value!r} is not a kernel mode; use one of {', '.join(MODES)}")
    return value


def unavailable(device: str, reason: str) -> None:
    """The fast kernel for ``device`` cannot run here: raise in ``native`` mode, else warn once."""
    if mode() == "native":
        raise RuntimeUnavailable(f"the {device} fake-quant kernel is unavailable ({reason}) and {ENV}=native")
    if device not in _warned:
        _warned.add(device)
        log.warning("%s fake-quant kernel unavailable (%s); using the torch reference (same results, slower)", device, reason)


def is_dense(x: Tensor) -> bool:
    """True when ``x`` covers exactly ``numel`` consecutive elements (any dim order, no gaps or overlap)."""
    if x.is_contiguous():
        return True
    dims = sorted((st, sz) for st, sz in zip(x.stride(), x.shape) if sz != 1)
    expect = 1
    for st, sz in dims:
        if st != expect:
            return False
        expect *= sz
    return True


def flat_layout(x: Tensor, axis: int | None) -> tuple[Tensor, int, int, int]:
    """``x`` as ``rows`` runs of ``inner`` elements in memory order; row ``r`` uses scale ``r % nch``.

    Per-tensor inputs keep any dense layout (channels_last included); per-channel inputs keep
    theirs when each channel is one contiguous block (contiguous, or channel-major along axis
    0 such as channels_last weights). Anything else is copied to contiguous first.
    """
    n = x.numel()
    if axis is None:
        return (x if is_dense(x) else x.contiguous()), 1, 1, n
    c = x.shape[axis]
    if x.is_contiguous():
        outer = 1
        for d in x.shape[:axis]:
            outer *= d
        return x, outer * c, c, (n // (outer * c) if n else 0)
    if axis == 0 and c and is_dense(x) and x.stride(0) == n // c:
        return x, c, c, n // c
    return flat_layout(x.contiguous(), axis)


def like_input(x: Tensor, y: Tensor) -> Tensor:
    """``y`` in the layout ``torch.empty_like(x)`` has (what the op's fake implementation promises)."""
    want = torch.empty_like(x, device="meta").stride()
    if y.stride() == want:
        return y
    out = torch.empty_like(x)
    out.copy_(y)
    return out
