"""The two training runs: ``train_supernet`` (one sampled path per step) and ``retrain`` (one
architecture from scratch). Both share the run bookkeeping here: output checks, resume,
checkpoints every ``ckpt_every`` steps and at the end, the summary JSON and the curve PNG.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spos_hw.io import atomic_write_with, check_new_output, load_checkpoint
from spos_hw.nas.checkpoint import check_kind_and_space, check_resumable, write_checkpoint
from spos_hw.nas.config import RECIPE_FIELDS, RetrainConfig, SupernetConfig, TrainConfig, resolve
from spos_hw.nas.costs import Bound, builtin_costs, pick_cost
from spos_hw.nas.data import BatchOrder, ImageData, load_data
from spos_hw.nas.distributed import init_distributed, shutdown
from spos_hw.nas.evaluation import evaluate
from spos_hw.nas.sampling import make_path_sampler
from spos_hw.nas.space import CostModel, SearchSpace
from spos_hw.nas.supernet import SubNet, Supernet
from spos_hw.nas.trainer import SupernetPolicy, Trainer

log = logging.getLogger(__name__)

CostModels = Callable[[SearchSpace], Mapping[str, CostModel]]
"""What prices a space's architectures by name (``nas.costs.builtin_costs``, plus latency from the api)."""


def _companions(out: Path) -> tuple[Path, Path]:
    return out.with_suffix(".json"), out.with_suffix(".png")


def _plot(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [p["step"] for p in curve]
    ax[0].plot(steps, [p["loss"] for p in curve])
    ax[0].set(xlabel="step", ylabel="training loss", title=title)
    ax[1].plot(steps, [p["acc"] for p in curve])
    ax[1].set(xlabel="step", ylabel="training accuracy (sampled paths)" if "supernet" in title else "training accuracy")
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


class _Run:
    """Shared set-up and bookkeeping of ``train_supernet`` and ``retrain``."""

    def __init__(self, config: TrainConfig, kind: str, progress: bool) -> None:
        from spos_hw.nas.spaces import get_space

        self.kind, self.progress = kind, progress
        self.out = Path(config.out)
        self.summary_path, self.png_path = _companions(self.out)
        self.dist = init_distributed(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        if self.dist.main:
            for p in (self.out, self.summary_path, self.png_path):
                check_new_output(p, overwrite=config.overwrite, resume=config.resume)
        self.space: SearchSpace = get_space(config.space)
        self.previous = None
        if config.resume and self.out.exists():
            self.previous = load_checkpoint(self.out, f"{kind} checkpoint")
            check_kind_and_space(self.previous, kind=kind, space=self.space, path=self.out)  # before any data loads
        elif config.resume and self.dist.main:
            log.info("%s does not exist yet: starting a new run", self.out)

    def load_data(self, config: TrainConfig) -> ImageData:
        self.data = load_data(config.data, self.space, workers=config.workers, progress=self.progress and self.dist.main)
        return self.data

    def finish_config(self, config: TrainConfig, n_train: int) -> TrainConfig:
        if self.previous is not None:
            recorded = self.previous.get("config", {})
            kept = {k: recorded[k] for k in RECIPE_FIELDS if getattr(config, k) is None and recorded.get(k) is not None}
            config = dataclasses.replace(config, **kept)
        self.config = resolve(config, n_train)
        if self.previous is not None:
            defaults = {f.name: f.default for f in dataclasses.fields(self.config) if f.default is not dataclasses.MISSING}
            check_resumable(
                self.previous, kind=self.kind, space=self.space, config=self.json_config(), path=self.out, defaults=defaults
            )
        return self.config

    def json_config(self) -> dict[str, Any]:
        d = {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)}
        d["data"] = self.data.name  # an image folder as an absolute path; your own datasets as custom:<name>
        return d

    def checkpoint(self, trainer: Trainer, extra: dict[str, Any]) -> None:
        self.dist.average_buffers(trainer.model)
        if not self.dist.main:
            return
        write_checkpoint(
            self.out,
            self.summary_path,
            kind=self.kind,
            space=self.space,
            config=self.json_config(),
            total_steps=self.config.steps,
            state=trainer.state_dict(),
            extra=extra,
        )
        log.debug("checkpoint %s at step %d", self.out, trainer.step)

    def train(self, trainer: Trainer, extra: dict[str, Any], stop_after: int | None) -> None:
        """Resume if asked, then train to the end (or ``stop_after``), checkpointing with ``extra``."""
        if self.previous is not None:
            trainer.load_state_dict(self.previous)
            log.info("resuming %s at step %d of %d", self.out, trainer.step, self.config.steps)
        until = min(self.config.steps, stop_after) if stop_after is not None else self.config.steps
        trainer.run(until, progress=self.progress, on_checkpoint=lambda t: self.checkpoint(t, extra))

    def summary(self, trainer: Trainer, title: str) -> dict[str, Any]:
        """Plot the curve of a finished run; the result fields both commands report."""
        finished = trainer.step >= self.config.steps
        if finished and self.dist.main and trainer.curve:
            _plot(trainer.curve, self.png_path, title)
        last = trainer.curve[-1] if trainer.curve else {}
        return {
            "checkpoint": str(self.out),
            "summary": str(self.summary_path),
            "space": self.space.name,
            "fingerprint": self.space.fingerprint,
            "step": trainer.step,
            "steps": self.config.steps,
            "finished": finished,
            "train_loss": last.get("loss"),
            "train_acc": last.get("acc"),
            "train_time_s": round(trainer.elapsed, 2),
            "config": self.json_config(),
        }


def eval_copy(model: nn.Module, space: SearchSpace) -> nn.Module:
    """``model`` for the test pass: a copy with BN folded into the convs for float spaces (the same
    function up to float rounding, 1.5x faster on CPU: bench/eval_speed.py); quantized ones as they are."""
    from spos_hw.nas.blocks import fuse_bn_

    model.eval()
    return model if space.quantized else fuse_bn_(copy.deepcopy(model))


def _seeded_init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_sampler(space: SearchSpace, config: SupernetConfig, costs: Mapping[str, CostModel]):
    """The path sampler of a supernet run: uniform, or uniform-constrained over the given costs.

    Ranges are in display units; an open end is the model's achievable bound.
    """
    bounds = [Bound.scaled(pick_cost(costs, name), lo, hi).closed() for name, lo, hi in config.constraints]
    rng = np.random.default_rng([config.seed, 0x5A])
    return make_path_sampler(space, bounds, rng=rng, bins=config.bins, method=config.sampling)


def train_supernet(
    config: SupernetConfig, *, cost_models: CostModels = builtin_costs, progress: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Train a weight-sharing supernet, one sampled path per step; returns a JSON-able summary.

    Args:
        config: the run's options (see ``SupernetConfig``).
        cost_models: prices the space's architectures by the constraints' names.
        progress: show a progress bar (main rank only).
        stop_after: stop after this step with a checkpoint, as a preempted job would
            (``resume=True`` continues it); the schedule still spans ``config.steps``.
    """
    run = _Run(config, "supernet", progress)
    try:
        sampler = build_sampler(run.space, config, cost_models(run.space))  # an infeasible constraint fails before data loads
        split = run.load_data(config).split(config.holdout if config.holdout < 1 else int(config.holdout), config.holdout_seed)
        cfg = run.finish_config(config, len(split.train))
        data_info = {**run.data.info(), "holdout": split.to_json()}
        order = BatchOrder(split.train, cfg.batch_size, cfg.seed)
        model = _seeded_init(lambda: Supernet(run.space, sharing=cfg.sharing), cfg.seed)
        trainer = Trainer(model, SupernetPolicy(model, sampler), data=run.data, order=order, config=cfg, dist=run.dist)
        run.train(trainer, {"data": data_info, "sampling": sampler.describe(), "sharing": cfg.sharing}, stop_after)
        return {
            **run.summary(trainer, f"supernet {run.space.name}"),
            "sampling": sampler.describe(),
            "data": data_info,
            "sharing": cfg.sharing,
        }
    finally:
        shutdown(run.dist)


def _inherit(cfg: RetrainConfig, run: _Run, arch) -> tuple[nn.Module, dict[str, Any]]:
    """The subnet with the supernet's weights, its BN recalibrated on training images as search does."""
    from spos_hw.io import file_sha256
    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.data import recalibration_batches
    from spos_hw.nas.recalibrate import default_recal_images, recalibrated_subnet

    supernet, _ = load_supernet(cfg.supernet, run.space)  # refused when made for another space
    split = run.data.split(0, 0)
    n = -(-default_recal_images(len(split.train)) // 128)
    with torch.random.fork_rng(devices=[]):
        sub = recalibrated_subnet(supernet, arch, recalibration_batches(run.data, split, n, 128, cfg.seed))
    return sub, {"supernet": str(cfg.supernet), "fingerprint": file_sha256(cfg.supernet)[:16], "recal_images": n * 128}


def retrain(config: RetrainConfig, *, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``config.arch`` as a standalone network (BN affine) on the full training data, from
    scratch (the paper) or from the supernet's inherited weights (``init="supernet"``), then
    report top-1 accuracy on the test split. Returns a JSON-able summary.

    Args:
        config: the run's options (see ``RetrainConfig``).
        progress: show a progress bar (main rank only).
        stop_after: stop after this step with a checkpoint (``resume=True`` continues it).
    """
    from spos_hw.nas.spaces import read_arch

    run = _Run(config, "subnet", progress)
    try:
        arch = read_arch(run.space, config.arch)
        run.load_data(config)
        all_train = np.arange(len(run.data.train))
        cfg = run.finish_config(dataclasses.replace(config, arch=str(arch)), len(all_train))
        order = BatchOrder(all_train, cfg.batch_size, cfg.seed)
        c, h, w = run.space.input_shape
        extra: dict[str, Any] = {
            "data": run.data.info(),
            "arch": str(arch),
            "arch_json": arch.to_json(),
            "input": {"channels": c, "height": h, "width": w, "mean": list(run.data.mean), "std": list(run.data.std)},
            "classes": list(run.data.classes),
            "test_accuracy": None,
        }
        if cfg.init == "supernet":
            model, extra["inherited"] = _inherit(cfg, run, arch)
        else:
            model = _seeded_init(lambda: SubNet(run.space, arch), cfg.seed)
        trainer = Trainer(model, data=run.data, order=order, config=cfg, dist=run.dist)
        if run.previous is not None:
            extra["test_accuracy"] = run.previous.get("test_accuracy")
        run.train(trainer, extra, stop_after)
        if trainer.step >= cfg.steps and extra["test_accuracy"] is None:
            everything = np.arange(len(run.data.test))
            test = evaluate(
                eval_copy(model, run.space),
                run.data,
                run.data.test,
                everything,
                batch_size=cfg.eval_batch_size,
                dist=run.dist,
                device=run.dist.device,
                channels_last=True,
            )
            extra["test_accuracy"], extra["test_loss"] = test["accuracy"], test["loss"]
            run.checkpoint(trainer, extra)
            log.info("test accuracy %.4f on %d images (%s)", test["accuracy"], test["n"], run.data.test_origin)
        return {
            **run.summary(trainer, f"retrain {arch}"),
            "arch": str(arch),
            "flops": int(run.space.flops.cost(arch.to_array())),
            "params": int(run.space.params.cost(arch.to_array())),
            "test_accuracy": extra["test_accuracy"],
            "test_images": len(run.data.test),
            "test_origin": run.data.test_origin,
        }
    finally:
        shutdown(run.dist)


__all__ = ["build_sampler", "retrain", "train_supernet"]
