"""Scoring a supernet path: BN recalibration on fixed training batches, then held-out top-1.

The supernet's BN running statistics were accumulated over many different paths, so they do
not fit any one of them. Before a candidate is scored, the BN layers on its path are reset
and their statistics recomputed as an exact cumulative average (``momentum=None``) over a
fixed set of training batches in train mode (everything else in eval mode: dropout off);
then top-1 accuracy is measured on a fixed held-out split in eval mode. Everything runs
under ``torch.inference_mode()``. The batches are prepared once (decoded, normalised,
stacked, channels_last, on the device) and reused for every candidate, so candidates are
scored on exactly the same images and only the network's work is repeated.

Only the path's BN layers influence a path's output, so resetting those suffices; the
stale statistics of other paths are never read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from spos_hw.errors import DataError

log = logging.getLogger(__name__)


PAPER_RECAL_IMAGES = 200 * 128
"""The paper recalibrates on 200 batches of 128 ImageNet training images."""

PAPER_TRAIN_IMAGES = 1_281_167 - 50_000
"""ImageNet training images left after the paper's 50,000-image held-out split."""


def default_recal_images(train_size: int, *, minimum: int = 512) -> int:
    """The paper's recalibration budget scaled to a dataset: the same fraction of its training split.

    That is ~2.1% (25,600 of 1.23M ImageNet images), with at least ``minimum`` images (BN
    statistics need a few thousand pixels per channel) and at most the whole split.
    """
    scaled = round(train_size * PAPER_RECAL_IMAGES / PAPER_TRAIN_IMAGES)
    return int(min(train_size, max(minimum, scaled)))


@dataclass(frozen=True)
class ScoringData:
    """The fixed tensors every candidate is scored on.

    Attributes:
        recal: training batches for BN recalibration (normalised, no augmentation).
        holdout: ``(x, y)`` batches of the held-out split.
    """

    recal: tuple[torch.Tensor, ...]
    holdout: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def recal_images(self) -> int:
        return sum(len(b) for b in self.recal)

    @property
    def holdout_images(self) -> int:
        return sum(len(y) for _, y in self.holdout)

    @classmethod
    def build(
        cls,
        recal: Sequence[torch.Tensor],
        holdout: Sequence[tuple[torch.Tensor, torch.Tensor]],
        *,
        device: str | torch.device = "cpu",
        channels_last: bool = True,
    ) -> ScoringData:
        """Move prepared (normalised float) batches to ``device`` once, in the memory format the net runs in.

        Args:
            recal: training batches ``[b, C, H, W]`` for BN recalibration. Their batch size is
                part of the protocol (BN statistics depend on it; the paper uses 128).
            holdout: ``(images, labels)`` batches of the held-out split (batch size is free).
        """
        if not recal:
            raise DataError("BN recalibration needs at least one training batch")
        if not holdout or sum(len(y) for _, y in holdout) == 0:
            raise DataError("scoring needs a non-empty held-out split")
        fmt = torch.channels_last if channels_last else torch.contiguous_format

        def put(x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 4:
                raise DataError(f"scoring images must be [N, C, H, W] tensors, got shape {list(x.shape)}")
            return x.to(device=device, dtype=torch.float32).contiguous(memory_format=fmt)

        return cls(
            tuple(put(x) for x in recal),
            tuple((put(x), y.to(device=device, dtype=torch.long)) for x, y in holdout),
        )


def _uninitialized(m: nn.Module) -> bool:
    """A module with data-initialised state (an LSQ quantizer) that has not been initialised yet."""
    flag = getattr(m, "initialized", None)
    return isinstance(flag, torch.Tensor) and flag.dim() == 0 and not bool(flag)


def _bns(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class SupernetScorer:
    """Held-out top-1 of supernet paths after BN recalibration (inference only).

    Takes over ``supernet``: its BN layers get ``momentum=None`` and their statistics are
    overwritten per candidate. Calling the scorer on an ``ArchBatch`` returns one accuracy
    per row; the result of a row does not depend on what was scored before it.

    Args:
        supernet: a trained ``Supernet`` (moved to the data's device by the caller).
        data: the fixed recalibration and held-out batches.
        channels_last: run convolutions in channels_last memory format (faster on CPU).
        progress: a tqdm bar over the candidates of each call.
        metric: ``accuracy`` (held-out top-1) or ``neg_loss`` (minus the held-out mean
            cross-entropy): the score; higher is better either way.
        fuse: score float spaces through the path cut out with its BN folded into the convs
            (the same function up to float rounding, ~1.6x faster; ``docs/search.md``).
    """

    METRICS = ("accuracy", "neg_loss")

    def __init__(
        self,
        supernet: nn.Module,
        data: ScoringData,
        *,
        channels_last: bool = True,
        progress: bool = False,
        metric: str = "accuracy",
        fuse: bool = True,
    ) -> None:
        if metric not in self.METRICS:
            raise DataError(f"unknown scoring metric {metric!r}; choose one of {', '.join(self.METRICS)}")
        self.metric = metric
        self.fuse = fuse and not supernet.space.quantized  # quantized weights would quantize differently once folded
        self.channels_last = channels_last
        self.net = supernet.eval()
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.data, self.progress = data, progress
        self.space = supernet.space
        self._fixed = _bns(supernet.stem) + _bns(supernet.head)
        self._choice = [[_bns(op) for op in choices] for choices in supernet.blocks]
        for bn in _bns(supernet):
            bn.momentum = None
        for m in supernet.modules():  # ranks score different candidates: no collective may run inside scoring
            if hasattr(m, "sync_init"):
                m.sync_init = False
        # Quantizers never used in training initialise from the first data they see; they are
        # put back after every candidate, so each candidate initialises them from its own data
        # (as a fresh copy of the supernet would) and scores do not depend on the order.
        self._pristine = {m: {k: v.clone() for k, v in m.state_dict().items()} for m in supernet.modules() if _uninitialized(m)}
        if self._pristine:
            log.warning(
                "%d quantizers of the supernet were never initialised (paths never trained?); "
                "candidates using them initialise them from their own recalibration data",
                len(self._pristine),
            )

    def path_bns(self, row: np.ndarray) -> list[nn.modules.batchnorm._BatchNorm]:
        return self._fixed + [bn for i, op in enumerate(row[:, 0]) for bn in self._choice[i][int(op)]]

    @torch.inference_mode()
    def recalibrate(self, row: np.ndarray) -> None:
        """Reset the path's BN statistics and recompute them on the fixed training batches."""
        bns = self.path_bns(row)
        for bn in bns:
            bn.reset_running_stats()
            bn.train()
        try:
            for x in self.data.recal:
                self.net(x, row)
        finally:
            for bn in bns:
                bn.eval()

    def path_forward(self, row: np.ndarray):
        """``x -> logits`` of the path with its current BN statistics (eval mode): the supernet itself,
        or (``fuse``) the path cut out with its BN folded into the convs."""
        if not self.fuse:
            return lambda x: self.net(x, row)
        from spos_hw.nas.blocks import fuse_bn_

        with torch.random.fork_rng(devices=[]):  # the subnet's (overwritten) init must not move the caller's RNG
            sub = fuse_bn_(self.net.materialize(self.space.decode(row)[0]))
        if self.channels_last:
            sub = sub.to(memory_format=torch.channels_last)
        return sub

    @torch.inference_mode()
    def holdout_metrics(self, row: np.ndarray) -> dict[str, float]:
        """Top-1 and mean cross-entropy on the held-out batches with the current BN statistics (eval mode)."""
        correct, loss = 0, 0.0
        forward = self.path_forward(row)
        for x, y in self.data.holdout:
            logits = forward(x).float()
            correct += int((logits.argmax(1) == y).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        n = self.data.holdout_images
        return {"accuracy": correct / n, "loss": loss / n}

    def accuracy(self, row: np.ndarray) -> float:
        """Top-1 on the held-out batches with the current BN statistics (eval mode)."""
        return self.holdout_metrics(row)["accuracy"]

    def evaluate(self, row: np.ndarray) -> dict[str, float]:
        """Recalibrate BN for ``row``, then its held-out accuracy and loss."""
        row = self.space.check_batch(np.asarray(row)[None])[0]
        try:
            self.recalibrate(row)
            return self.holdout_metrics(row)
        finally:
            for m, state in self._pristine.items():
                m.load_state_dict(state)

    def score(self, row: np.ndarray) -> float:
        m = self.evaluate(row)
        return m["accuracy"] if self.metric == "accuracy" else -m["loss"]

    def __call__(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        rows = np.asarray(batch)
        if rows.ndim == 2:
            rows = rows[None]
        it = rows
        if self.progress and len(rows) > 1:
            from tqdm.auto import tqdm

            it = tqdm(rows, desc="scoring", unit="arch", leave=False)
        return np.array([self.score(r) for r in it], dtype=np.float64)


def recalibrated_subnet(supernet: nn.Module, arch, batches: Sequence[torch.Tensor]) -> nn.Module:
    """``arch`` cut out of ``supernet`` with the BN statistics search scored it with: the path's BN
    recalibrated on ``batches`` (prepared training images), then its weights copied
    (``Supernet.materialize``). Where a fine-tuning retrain starts (``retrain --init supernet``)."""
    row = supernet.space.arch(arch).to_array() if not isinstance(arch, np.ndarray) else arch
    scorer = SupernetScorer(
        supernet,
        ScoringData.build(batches, [(batches[0][:1], torch.zeros(1, dtype=torch.long))], channels_last=False),
        channels_last=False,
    )
    scorer.recalibrate(row)
    return supernet.materialize(supernet.space.decode(row)[0])


def scorer_for_checkpoint(
    net: nn.Module,
    ckpt: dict,
    *,
    data: str | None = None,
    recal_images: int | None = None,
    recal_batch_size: int = 128,
    holdout: int | None = None,
    eval_batch_size: int = 500,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[SupernetScorer, dict]:
    """The scorer of a trained supernet: its dataset's held-out split, rebuilt from the checkpoint.

    Args:
        net, ckpt: what ``nas.checkpoint.load_supernet`` returns.
        data: the dataset (default: the one recorded in the checkpoint).
        recal_images: training images for recalibration (default ``default_recal_images``),
            rounded up to whole batches of ``recal_batch_size`` (one smaller batch if fewer).
        holdout: score on this many held-out images, a seeded stratified subset (default: all).
        seed: which training images recalibrate, and which held-out images are scored.

    Returns:
        The scorer and what it scores on (dataset, split, image counts) for the record.
    """
    from spos_hw.nas.checkpoint import data_for_checkpoint
    from spos_hw.nas.data import eval_batches, recalibration_batches, stratified_subset

    for name, v in (
        ("recal_batch_size", recal_batch_size),
        ("eval_batch_size", eval_batch_size),
        ("recal_images", recal_images or 1),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{name} must be a positive integer, got {v!r}")
    space = net.space
    loaded, split = data_for_checkpoint(ckpt, space, data)
    if not len(split.holdout):
        raise DataError("the supernet was trained without a held-out split; search scores on one (train-supernet --holdout)")
    n_recal = recal_images if recal_images is not None else default_recal_images(len(split.train))
    recal_batch_size = min(recal_batch_size, n_recal)
    n_batches = -(-n_recal // recal_batch_size)
    n_holdout = len(split.holdout) if holdout is None else holdout
    if isinstance(n_holdout, bool) or not isinstance(n_holdout, int) or not 1 <= n_holdout <= len(split.holdout):
        raise DataError(f"--holdout must be in 1..{len(split.holdout)} (the held-out split's size), got {n_holdout!r}")
    recal = recalibration_batches(loaded, split, n_batches, recal_batch_size, seed)
    scored = stratified_subset(split.holdout, loaded.train.labels, n_holdout, seed)
    hold = [(loaded.prepare(x), y) for x, y in eval_batches(loaded.train, scored, eval_batch_size)]
    channels_last = torch.device(device).type == "cpu"
    scoring = ScoringData.build(recal, hold, device=device, channels_last=channels_last)
    scorer = SupernetScorer(net.to(device), scoring, channels_last=channels_last)
    info = {
        "dataset": loaded.name,
        "holdout_split": split.to_json(),
        "recal_images": n_batches * recal_batch_size,
        "recal_batch_size": recal_batch_size,
        "holdout_images": n_holdout,
    }
    if n_holdout < len(split.holdout):  # which images: earlier versions took the first n (one class, on sorted folders)
        info["holdout_subset"] = "stratified"
    return scorer, info


__all__ = [
    "PAPER_RECAL_IMAGES",
    "ScoringData",
    "SupernetScorer",
    "default_recal_images",
    "recalibrated_subnet",
    "scorer_for_checkpoint",
]
