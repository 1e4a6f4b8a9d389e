"""Supernet training (one sampled path per step) and retraining a subnet from scratch.

Both run through one ``Trainer``: SGD with momentum, linear lr decay to 0, label smoothing,
weight decay on conv/linear kernels only; DDP under ``torchrun``; checkpoints every
``ckpt_every`` steps and at the end, resumed bit-identically.

Every random choice but one is a pure function of ``(seed, step, chunk)``: the data order (a
seeded permutation per epoch), the augmentation and the dropout masks. The one stateful
generator is the architecture sampler's, saved in the checkpoint. So a run killed at step k
and resumed reads, samples and computes exactly what the uninterrupted run does, and a
single process with ``accum=N`` reproduces ``N`` DDP ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spos_hw.errors import ArtifactError, ArtifactMismatch, ConfigError
from spos_hw.io import atomic_write_json, atomic_write_with, check_new_output, load_checkpoint, save_checkpoint
from spos_hw.nas.checkpoint import FORMAT, check_kind_and_space, check_resumable, versions
from spos_hw.nas.data import BUILTIN, BatchOrder, ImageData, augment_generator, eval_batches, load_data
from spos_hw.nas.blocks import ConvBNAct
from spos_hw.nas.distributed import Dist, init_distributed, shutdown
from spos_hw.nas.sampling import Constraint, cost_model, make_sampler, model_bounds
from spos_hw.nas.space import SearchSpace
from spos_hw.nas.supernet import SubNet, Supernet

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What both training commands share. ``None`` fields resolve to the dataset's defaults."""

    space: str  # search space: a registered name (with :classes=N,... overrides) or a .json spec
    data: str  # fashion-mnist | digits | an ImageFolder folder
    out: str  # checkpoint path (a summary .json and a curve .png go beside it)
    steps: int | None = None  # optimizer steps; None: from epochs
    epochs: float | None = None  # passes over the training data; None (and no steps): dataset default
    batch_size: int = 128  # global batch: all ranks and accumulation micro-steps together
    accum: int = 1  # micro-batches per rank per step (BN sees batch_size / (ranks x accum))
    lr: float | None = None  # peak lr, decayed linearly to 0; None: dataset default scaled by batch
    momentum: float = 0.9  # SGD momentum (paper)
    weight_decay: float | None = None  # on conv/linear kernels only; None: dataset default
    label_smoothing: float = 0.1  # paper
    augment: bool | None = None  # the dataset's light augmentation (random crop, flip where it makes sense); None: recipe
    seed: int = 0  # model init, data order, augmentation, dropout, architecture sampling
    log_every: int = 50  # steps between log lines and curve points
    ckpt_every: int = 500  # steps between checkpoints (one is always written at the end)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "bf16"  # autocast dtype on CUDA: bf16 | fp16 | off (CPU always runs fp32)
    threads: int | None = None  # torch CPU threads; None: torch's default
    workers: int | None = None  # DataLoader workers for image folders; None: by size
    resume: bool = False  # continue --out if it exists
    overwrite: bool = False  # replace --out if it exists

    def __post_init__(self) -> None:
        checks = [
            (self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.steps is None or self.epochs is None, "give steps or epochs, not both"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.accum >= 1, f"accum must be >= 1, got {self.accum}"),
            (self.lr is None or self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay is None or self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1"),
            (self.amp in ("bf16", "fp16", "off"), f"amp must be bf16, fp16 or off, got {self.amp!r}"),
            (self.threads is None or self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
            (not (self.resume and self.overwrite), "give --resume or --overwrite, not both"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


@dataclass(frozen=True, kw_only=True)
class SupernetConfig(TrainConfig):
    out: str = "supernet.pt"
    constraints: tuple[tuple[str, float | None, float | None], ...] = ()  # (flops|params|bitops|latency, lo, hi) in display units; None: the bound
    bins: int = 7  # bins of the first constraint's range (paper: 7)
    sampling: str = "auto"  # exact (DP, additive costs) | rejection (paper) | auto
    lut: str | None = None  # latency table for a latency constraint
    holdout: float = 0.1  # training data held out for search scoring: a fraction, or a count if >= 1
    holdout_seed: int = 0  # seed of the stratified held-out split (search reproduces it)


@dataclass(frozen=True, kw_only=True)
class RetrainConfig(TrainConfig):
    arch: str  # canonical architecture string (validated against the space)
    out: str = "model.pt"
    eval_batch_size: int = 500  # test-time batch


@dataclass(frozen=True)
class Recipe:
    """A dataset's defaults: ``lr`` is per 256 images and scales linearly with the batch."""

    epochs: float
    lr_per_256: float
    weight_decay: float
    augment: bool


PAPER = Recipe(epochs=120, lr_per_256=0.125, weight_decay=4e-5, augment=True)
"""SPOS ImageNet: lr 0.5 at batch 1024, 150k iterations (~120 epochs), wd 4e-5."""
RECIPES = {
    "fashion-mnist": Recipe(epochs=10, lr_per_256=0.2, weight_decay=5e-5, augment=False),
    "digits": Recipe(epochs=30, lr_per_256=0.2, weight_decay=5e-5, augment=True),
}
"""Small datasets: fewer epochs, a higher lr (short schedules), light decay. Fashion-MNIST is
centred and consistently oriented: its random crop cost 3 points of test accuracy after one
epoch (87.4% -> 84.4%), so it is off by default (docs/training.md)."""


def resolve(config: TrainConfig, n_train: int) -> TrainConfig:
    """Fill the dataset defaults (lr, weight decay, steps) into ``config``."""
    recipe = RECIPES.get(config.data, PAPER)
    spe = max(1, n_train // config.batch_size)
    steps = config.steps or max(1, math.ceil((config.epochs or recipe.epochs) * spe))
    return dataclasses.replace(
        config,
        steps=steps,
        epochs=None,
        lr=config.lr if config.lr is not None else recipe.lr_per_256 * config.batch_size / 256,
        weight_decay=config.weight_decay if config.weight_decay is not None else recipe.weight_decay,
        augment=config.augment if config.augment is not None else recipe.augment,
    )


# ----------------------------------------------------------------------------- pieces


STEP_LR_SCALE = 0.01
"""Learning-rate multiplier of quantizer step sizes. Their natural size is ~1e-3 (max|w| / 127),
so the network's lr (0.1) with momentum overshoots them to the floor and switches channels off
(docs/quantization.md, Accuracy); LSQ's gradient scaling alone does not prevent it."""


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict[str, Any]]:
    """Weight decay on conv and linear kernels only (paper); none on BN affine terms or biases.

    Quantizer step sizes (modules with ``project_``) form a third group without decay, at
    ``STEP_LR_SCALE`` x ``lr`` when ``lr`` is given.
    """
    steps = {id(p) for m in model.modules() if hasattr(m, "project_") for p in m.parameters(recurse=False)}
    decay, rest, step = [], [], []
    for p in model.parameters():
        (step if id(p) in steps else decay if p.ndim > 1 else rest).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    if step:
        groups.append({"params": step, "weight_decay": 0.0, **({"lr": lr * STEP_LR_SCALE} if lr is not None else {})})
    return groups


def linear_decay(total: int) -> Callable[[int], float]:
    return lambda step: max(0.0, 1.0 - step / total)


def partial_parameters(net: Supernet, row: np.ndarray) -> list[tuple[nn.Parameter, tuple[slice, slice]]]:
    """Conv weights ``row`` uses only in part (narrower channel choices), with the used slice.

    Their gradient is zero outside the slice, but SGD's momentum and weight decay would still
    move it; ``Trainer`` restores those entries after the step so unchosen channels stay put.
    """
    out = []
    space = net.space
    for pos, choices in zip(space.positions, net.blocks):
        choice = row[pos.index]
        plan = space.plan(pos, choice)
        convs = [u.conv for u in choices[int(choice[0])].modules() if isinstance(u, ConvBNAct)]  # plan order
        if len(convs) != len(plan.convs):
            raise RuntimeError(f"block {pos.index}: {len(convs)} conv modules but the plan lists {len(plan.convs)}")
        for conv, spec in zip(convs, plan.convs):
            used = (spec.cout, spec.cin // spec.groups)
            if used != tuple(conv.weight.shape[:2]):
                out.append((conv.weight, (slice(0, used[0]), slice(0, used[1]))))
    return out


@contextlib.contextmanager
def _keep_unused_slices(opt: torch.optim.Optimizer, parts: list[tuple[nn.Parameter, tuple[slice, slice]]]):
    """Undo the optimizer step outside each used slice (weights and momentum buffers)."""
    saved = []
    for p, s in parts:
        buf = opt.state.get(p, {}).get("momentum_buffer")
        saved.append((p, s, p.detach().clone(), None if buf is None else buf.clone()))
    yield
    with torch.no_grad():
        for p, s, old, old_buf in saved:
            old[s] = p[s]
            p.copy_(old)
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                fresh = torch.zeros_like(buf) if old_buf is None else old_buf
                fresh[s] = buf[s]
                buf.copy_(fresh)


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
        totals += torch.tensor([
            float(F.cross_entropy(logits, y, reduction="sum")), float((logits.argmax(1) == y).sum()), len(y),
        ], dtype=torch.float64)  # fmt: skip
    totals = dist.all_sum(totals)
    n = max(float(totals[2]), 1.0)
    return {"accuracy": float(totals[1]) / n, "loss": float(totals[0]) / n, "n": int(totals[2])}


@torch.no_grad()
def recalibrate_bn(net: Supernet, arch, batches: list[torch.Tensor]) -> None:
    """Reset BN statistics and re-estimate them on ``batches`` for ``arch`` (exact averages).

    What search does before scoring a candidate with inherited weights (paper, Sec. 3.3).
    """
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = net.training
    net.train()
    device = next(net.parameters()).device
    try:
        for x in batches:
            net(x.to(device), arch)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        net.train(was)


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """One run: model, SGD, linear schedule, data order and (supernets) the path sampler.

    ``step`` counts finished optimizer steps. ``state_dict()``/``load_state_dict()`` cover
    everything a resumed run needs; ``run(until)`` trains up to a step.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        data: ImageData,
        order: BatchOrder,
        config: TrainConfig,
        dist: Dist,
        sampler=None,
    ) -> None:
        self.cfg, self.data, self.order, self.dist, self.sampler = config, data, order, dist, sampler
        self.device = dist.device
        self.cuda = self.device.type == "cuda"
        self.channels_last = True  # ~25% faster convs on CPU (mkldnn), the fast layout for AMP on CUDA
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.supernet = isinstance(model, Supernet)
        self.sliced = self.supernet and len(model.space.channel_scales) > 1
        self._projected = [m for m in model.modules() if callable(getattr(m, "project_", None))]
        self.chunks = dist.world * config.accum
        if config.batch_size % self.chunks:
            raise ConfigError(f"batch size {config.batch_size} is not divisible by ranks x accum = {self.chunks}")
        self.net: nn.Module = self.model
        if dist.active:
            ddp = nn.parallel.DistributedDataParallel
            # BN statistics stay rank-local during training (no broadcast every forward) and are
            # averaged over ranks at each checkpoint; newer torch renamed the switch
            no_sync_buffers = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
            self.net = ddp(
                self.model,
                device_ids=[self.device.index] if self.cuda else None,
                find_unused_parameters=self.supernet,  # same path on every rank: the rest keeps grad None
                **{no_sync_buffers: False},
            )
        self.opt = torch.optim.SGD(param_groups(self.model, config.weight_decay, config.lr), lr=config.lr, momentum=config.momentum)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, linear_decay(config.steps))
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp) if self.cuda else None
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.step = 0
        self.curve: list[dict[str, float]] = []
        self.elapsed = 0.0
        self._window = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, examples

    # --- state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "sampler": self.sampler.state_dict() if self.sampler else None,
            "step": self.step,
            "epoch": self.order.epoch_of(self.step),
            "position": self.step % self.order.steps_per_epoch,
            "chunks": self.chunks,
            "curve": list(self.curve),
            "window": self._window.cpu().tolist(),  # the unfinished log window (loss sum, correct, n)
            "elapsed_s": self.elapsed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.curve = list(state["curve"])
        self._window = torch.tensor(state["window"], dtype=torch.float64, device=self.device)
        self.elapsed = float(state["elapsed_s"])
        if state.get("chunks") != self.chunks:
            log.warning(
                "resuming with %d BN groups per step (ranks x accum) instead of %d: training continues, "
                "but not bit-identically to the original run", self.chunks, state.get("chunks"),
            )  # fmt: skip

    # --- one step
    def _arch(self) -> np.ndarray | None:
        if self.sampler is None:
            return None
        row = self.sampler.sample(1)[0] if self.dist.main else None
        return self.dist.broadcast_batch(row, (self.model.space.num_blocks, 4))

    def _rank_indices(self, step: int) -> np.ndarray:
        per_rank = self.cfg.batch_size // self.dist.world
        return self.order.batch(step)[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]

    def _train_step(self, images: torch.Tensor, idx: np.ndarray) -> None:
        cfg, accum = self.cfg, self.cfg.accum
        row = self._arch()
        labels = torch.from_numpy(self.data.train.labels[idx])
        size = len(idx) // accum
        self.opt.zero_grad(set_to_none=True)  # unsampled paths keep grad None: SGD skips them entirely
        for a in range(accum):
            chunk = self.dist.rank * accum + a
            x = images[a * size : (a + 1) * size]
            if cfg.augment:
                x = self.data.augment(x, augment_generator(cfg.seed, self.step, chunk))
            x = self.data.prepare(x, self.device, self.channels_last)
            y = labels[a * size : (a + 1) * size].to(self.device, non_blocking=True)
            torch.manual_seed(int(np.random.SeedSequence([cfg.seed, self.step, chunk, 1]).generate_state(1)[0]))
            sync = self.net.no_sync() if self.dist.active and a < accum - 1 else contextlib.nullcontext()
            with sync, torch.autocast(self.device.type, self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                logits = self.net(x, row) if self.supernet else self.net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            (self.scaler.scale(loss / accum) if self.scaler else loss / accum).backward()
            with torch.no_grad():
                self._window[0] += loss.detach().double() * len(y)
                self._window[1] += (logits.argmax(1) == y).sum()
                self._window[2] += len(y)
        guard = _keep_unused_slices(self.opt, partial_parameters(self.model, row)) if self.sliced else contextlib.nullcontext()
        with guard:
            if self.scaler:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
        for m in self._projected:  # e.g. LSQ step sizes stay positive (projected SGD)
            m.project_()
        self.sched.step()
        self.step += 1

    def train_step(self) -> None:
        """One optimizer step on this step's batch (what ``run`` loops over)."""
        idx = self._rank_indices(self.step)
        self._train_step(self.data.train.fetch(idx), idx)

    def _log_point(self, step_s: float) -> dict[str, float]:
        w = self.dist.all_sum(self._window).cpu().clone()
        self._window.zero_()
        n = max(float(w[2]), 1.0)
        point = {
            "step": self.step,
            "epoch": round(self.step / self.order.steps_per_epoch, 4),
            "loss": round(float(w[0]) / n, 5),
            "acc": round(float(w[1]) / n, 5),
            "lr": float(self.sched.get_last_lr()[0]),
            "s_per_step": round(step_s, 4),
            "time_s": round(self.elapsed, 2),
        }
        self.curve.append(point)
        return point

    def run(
        self,
        until: int,
        *,
        progress: bool = False,
        on_checkpoint: Callable[["Trainer"], None] | None = None,
    ) -> None:
        """Train up to step ``until``, logging every ``log_every`` and checkpointing every ``ckpt_every``."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.model.train()
        steps = range(self.step, until)
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", disable=not (progress and self.dist.main), dynamic_ncols=True)
        stream = self.data.train.stream(self._rank_indices(t) for t in steps)
        t_window, n_window = 0.0, 0
        last_ckpt = self.step
        scope = contextlib.ExitStack()
        scope.enter_context(_fork_rng(self.dist))  # dropout is reseeded per chunk; the caller's RNG is left alone
        if not bar.disable:
            from tqdm.contrib.logging import logging_redirect_tqdm

            scope.enter_context(logging_redirect_tqdm())  # log lines print above the bar, not through it
        try:
            for t in steps:
                t0 = time.perf_counter()
                self._train_step(next(stream), self._rank_indices(t))
                dt = time.perf_counter() - t0
                self.elapsed += dt
                t_window, n_window = t_window + dt, n_window + 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    p = self._log_point(t_window / n_window)
                    t_window, n_window = 0.0, 0
                    bar.set_postfix(loss=f"{p['loss']:.3f}", acc=f"{p['acc']:.3f}", s_step=f"{p['s_per_step']:.3f}")
                    if self.dist.main:
                        log.info("step %d/%d  loss %.4f  acc %.4f  lr %.4g  %.3f s/step",
                                 self.step, cfg.steps, p["loss"], p["acc"], p["lr"], p["s_per_step"])  # fmt: skip
                if on_checkpoint and (self.step % cfg.ckpt_every == 0 or self.step == until):
                    on_checkpoint(self)
                    last_ckpt = self.step
        except KeyboardInterrupt:
            if on_checkpoint and not self.dist.active and self.step > last_ckpt:
                log.warning("interrupted at step %d: writing a checkpoint first", self.step)
                on_checkpoint(self)
            raise
        finally:
            scope.close()
            bar.close()


# ----------------------------------------------------------------------------- runs


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
        self.config = resolve(config, n_train)
        if self.previous is not None:
            check_resumable(self.previous, kind=self.kind, space=self.space, config=self.json_config(), path=self.out)
        return self.config

    def json_config(self) -> dict[str, Any]:
        d = dataclasses.asdict(self.config)
        if self.config.data not in BUILTIN:
            d["data"] = self.data.name  # an image folder, as an absolute path
        return d

    def checkpoint(self, trainer: Trainer, extra: dict[str, Any]) -> None:
        self.dist.average_buffers(trainer.model)
        if not self.dist.main:
            return
        ckpt = {
            "kind": self.kind,
            "format": FORMAT,
            "space": self.space.to_json(),
            "space_name": self.space.name,
            "fingerprint": self.space.fingerprint,
            "config": self.json_config(),
            "total_steps": self.config.steps,
            **trainer.state_dict(),
            **extra,
            "versions": versions(),
        }
        save_checkpoint(self.out, ckpt)
        summary = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "scheduler", "scaler", "sampler", "space")}
        atomic_write_json(self.summary_path, summary)
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


def _seeded_init(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _fork_rng(dist: Dist):
    return torch.random.fork_rng(devices=[dist.device.index or 0] if dist.device.type == "cuda" else [])


def build_sampler(space: SearchSpace, config: SupernetConfig):
    """The path sampler of a supernet run: uniform, or uniform-constrained over the given costs."""
    constraints = []
    for name, lo, hi in config.constraints:
        model = cost_model(space, name, config.lut)
        if lo is None or hi is None:  # an open end is the achievable bound
            bounds = model_bounds(model)
            if bounds is None:
                raise ConfigError(f"the {name} cost model cannot tell its bounds: give both ends of --range")
            scale = float(getattr(model, "scale", 1.0) or 1.0)
            lo = bounds[0] / scale if lo is None else lo
            hi = bounds[1] / scale if hi is None else hi
        constraints.append(Constraint.scaled(model, lo, hi))
    return make_sampler(space, constraints, rng=np.random.default_rng([config.seed, 0x5A]), bins=config.bins, method=config.sampling)


def train_supernet(config: SupernetConfig, *, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train a weight-sharing supernet, one sampled path per step; returns a JSON-able summary.

    Args:
        config: the run's options (see ``SupernetConfig``).
        progress: show a progress bar (main rank only).
        stop_after: stop after this step with a checkpoint, as a preempted job would
            (``resume=True`` continues it); the schedule still spans ``config.steps``.
    """
    run = _Run(config, "supernet", progress)
    try:
        sampler = build_sampler(run.space, config)  # an infeasible constraint fails before data loads
        split = run.load_data(config).split(config.holdout if config.holdout < 1 else int(config.holdout), config.holdout_seed)
        cfg = run.finish_config(config, len(split.train))
        data_info = {**run.data.info(), "holdout": split.to_json()}
        order = BatchOrder(split.train, cfg.batch_size, cfg.seed)
        model = _seeded_init(lambda: Supernet(run.space), cfg.seed)
        trainer = Trainer(model, data=run.data, order=order, config=cfg, dist=run.dist, sampler=sampler)
        run.train(trainer, {"data": data_info, "sampling": sampler.describe()}, stop_after)
        return {**run.summary(trainer, f"supernet {run.space.name}"), "sampling": sampler.describe(), "data": data_info}
    finally:
        shutdown(run.dist)


def retrain(config: RetrainConfig, *, progress: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Train ``config.arch`` from scratch as a standalone network (BN affine) on the full
    training data, then report top-1 accuracy on the test split. Returns a JSON-able summary.

    Args:
        config: the run's options (see ``RetrainConfig``).
        progress: show a progress bar (main rank only).
        stop_after: stop after this step with a checkpoint (``resume=True`` continues it).
    """
    run = _Run(config, "subnet", progress)
    try:
        arch = run.space.arch(config.arch)
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
        model = _seeded_init(lambda: SubNet(run.space, arch), cfg.seed)
        trainer = Trainer(model, data=run.data, order=order, config=cfg, dist=run.dist)
        if run.previous is not None:
            extra["test_accuracy"] = run.previous.get("test_accuracy")
        run.train(trainer, extra, stop_after)
        if trainer.step >= cfg.steps and extra["test_accuracy"] is None:
            model.eval()
            test = evaluate(
                model, run.data, run.data.test, np.arange(len(run.data.test)), batch_size=cfg.eval_batch_size,
                dist=run.dist, device=run.dist.device, channels_last=True,
            )  # fmt: skip
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


def data_for_checkpoint(ckpt: dict, space: SearchSpace, data: str | None = None):
    """The dataset and held-out split a supernet checkpoint was trained with (for search).

    ``data`` overrides the recorded dataset path (an image folder that moved); the split is
    rebuilt from the recorded seed and size and checked against the recorded train size.
    """
    info = ckpt.get("data") or {}
    name = data or info.get("dataset")
    if not name:
        raise ArtifactError("checkpoint records no dataset; pass --data")
    if data in BUILTIN and info.get("dataset") not in (None, data):
        raise ArtifactMismatch(f"the supernet was trained on {info['dataset']!r}, not {data!r}; search it on its own dataset")
    loaded = load_data(name, space)
    ho = info.get("holdout") or {"seed": 0, "size": 0}
    split = loaded.split(int(ho["size"]), int(ho["seed"])) if ho["size"] else loaded.split(0, 0)
    if "train_size" in ho and len(split.train) != ho["train_size"]:
        raise ArtifactError(f"dataset {name!r} no longer matches the checkpoint ({len(split.train)} training images, recorded {ho['train_size']})")
    return loaded, split


__all__ = [
    "PAPER",
    "RECIPES",
    "Recipe",
    "RetrainConfig",
    "SupernetConfig",
    "TrainConfig",
    "Trainer",
    "data_for_checkpoint",
    "evaluate",
    "param_groups",
    "partial_parameters",
    "recalibrate_bn",
    "resolve",
    "retrain",
    "train_supernet",
]
