"""Channel-sliceable layers: one weight tensor at the widest setting serves every narrower choice.

Every layer takes ``bits=(weight_bits, act_bits)`` at forward time so quantizing layers
(``spos_hw.quant.layers``, subclasses of these) can be injected in their place; these float
layers ignore it.
A layer built at exactly the size it is used at runs unsliced, as a plain conv/BN/linear.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class SliceConv2d(nn.Conv2d):
    """Conv2d (no bias) that uses the first ``in`` input and first ``out_channels`` output channels.

    Depthwise convs (``groups == in_channels == out_channels``) follow the width of their
    input. Other grouped convs (FBNet's group-2 pointwise convs) are used whole.

    The weight may be larger than the layer's own shape when it is shared with a wider or
    larger-kernel choice (weight entanglement, ``nas.sharing``): the layer then uses the first
    channels and the centre ``k x k`` of the stored kernel (``own_weight``).
    """

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(cin, cout, k, stride, k // 2, groups=groups, bias=False)

    @property
    def own_shape(self) -> tuple[int, int, int, int]:
        """The weight shape this layer was built with (its own widest channels and kernel)."""
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def own_weight(self) -> torch.Tensor:
        """The stored weight cropped to ``own_shape``: first channels, centre of the kernel."""
        return crop_weight(self.weight, self.own_shape)

    def sliced_weight(self, cin: int, out_channels: int | None) -> tuple[torch.Tensor, int]:
        w = self.own_weight()
        if self.groups > 1 and not self.groups == self.in_channels == self.out_channels:
            if cin != self.in_channels or (out_channels or self.out_channels) != self.out_channels:
                raise ValueError(
                    f"a grouped conv ({self.in_channels}->{self.out_channels}, groups {self.groups}) cannot be sliced"
                )
            return w, self.groups
        if self.groups > 1:
            return (w if cin == self.out_channels else w[:cin]), cin
        cout = out_channels or self.out_channels
        if cout != self.out_channels or cin != self.in_channels:
            w = w[:cout, :cin]
        return w, 1

    def forward(self, x: torch.Tensor, out_channels: int | None = None, bits=None) -> torch.Tensor:
        w, groups = self.sliced_weight(x.shape[1], out_channels)
        return F.conv2d(x, w, None, self.stride, self.padding, 1, groups)


def crop_region(stored: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """Where a tensor of ``shape`` sits inside a shared ``stored`` one: the first entries along every
    dimension, except the kernel dimensions (2 and 3) of a 4-d conv weight, which take the centre
    (Once-for-All's elastic kernel)."""
    region = []
    for d, (n_stored, n) in enumerate(zip(stored, shape, strict=True)):
        if n > n_stored:
            raise ValueError(f"cannot crop a {list(stored)} tensor to {list(shape)}")
        start = (n_stored - n) // 2 if len(stored) == 4 and d >= 2 else 0
        region.append(slice(start, start + n))
    return tuple(region)


def crop_weight(w: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``w`` cropped to ``shape`` (see ``crop_region``); ``w`` itself when the shapes agree."""
    if tuple(w.shape) == tuple(shape):
        return w
    return w[crop_region(w.shape, shape)]


class SliceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d over the first C channels of its statistics (C = the input's width).

    With ``momentum=None`` the running statistics are an exact cumulative average, which is
    what BN recalibration in the search uses.
    """

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        c = x.shape[1]
        if c == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            self.running_mean[:c] if self.running_mean is not None else None,
            self.running_var[:c] if self.running_var is not None else None,
            self.weight[:c] if self.weight is not None else None,
            self.bias[:c] if self.bias is not None else None,
            use_batch,
            factor,
            self.eps,
        )


class Linear(nn.Linear):
    """``nn.Linear`` with the common ``bits`` forward argument."""

    def own_weight(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor, bits=None) -> torch.Tensor:
        return super().forward(x)
