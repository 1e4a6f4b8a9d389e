"""Top-1 accuracy and loss of a network over a data split (stand-alone evaluation, test reports)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from spos_hw.nas.data import ImageData, eval_batches
from spos_hw.nas.distributed import Dist


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    data: ImageData,
    source,
    indices: np.ndarray,
    *,
    batch_size: int = 500,
    dist: Dist | None = None,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy of ``forward`` over ``source[indices]`` (no augmentation).

    Under DDP every rank scores its share and the totals are summed. The caller sets eval mode.
    """
    dist = dist or Dist()
    mine = indices[dist.rank :: dist.world]
    totals = torch.zeros(3, dtype=torch.float64)
    for x, y in eval_batches(source, mine, batch_size):
        logits = forward(data.prepare(x, device, channels_last)).float()
        y = y.to(logits.device)
        totals += torch.tensor(
            [
                float(F.cross_entropy(logits, y, reduction="sum")),
                float((logits.argmax(1) == y).sum()),
                len(y),
            ],
            dtype=torch.float64,
        )
    totals = dist.all_sum(totals)
    n = max(float(totals[2]), 1.0)
    return {"accuracy": float(totals[1]) / n, "loss": float(totals[0]) / n, "n": int(totals[2])}


__all__ = ["evaluate"]
