"""The training loop shared by supernet training and retraining: ``Trainer(model, policy)``.

SGD with momentum, linear lr decay to 0, label smoothing, weight decay on conv/linear kernels
only; DDP under ``torchrun``; ``state_dict``/``load_state_dict`` for bit-identical resume. What
differs between a supernet and a fixed architecture is the *policy*: which architecture a step
runs (``SupernetPolicy`` samples one path per step, rank 0 samples and broadcasts), how the
model is called, and what the optimizer step must leave alone (the slices of channel-sliced
weights a narrower path did not use). The loop itself never asks which kind of model it has.

Every random choice but the policy's is a pure function of ``(seed, step, chunk)``: the data
order (a seeded permutation per epoch), the augmentation and the dropout masks. The policy's
sampler state is saved in the checkpoint. So a run killed at step k and resumed reads, samples
and computes exactly what the uninterrupted run does, and a single process with ``accum=N``
reproduces ``N`` DDP ranks.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spos_hw.errors import ConfigError
from spos_hw.nas.config import TrainConfig
from spos_hw.nas.data import BatchOrder, ImageData, augment_generator
from spos_hw.nas.distributed import Dist

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def keep_unused_slices(opt: torch.optim.Optimizer, parts: list[tuple[nn.Parameter, torch.Tensor]]):
    """Undo the optimizer step outside each used region (weights and momentum buffers)."""
    saved = []
    for p, used in parts:
        buf = opt.state.get(p, {}).get("momentum_buffer")
        saved.append((p, used.to(p.device), p.detach().clone(), None if buf is None else buf.clone()))
    yield
    with torch.no_grad():
        for p, used, old, old_buf in saved:
            p.copy_(torch.where(used, p, old))
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                buf.copy_(torch.where(used, buf, torch.zeros_like(buf) if old_buf is None else old_buf))


# ----------------------------------------------------------------------------- policies


class Policy(Protocol):
    """What a ``Trainer`` asks of the model kind it trains."""

    find_unused_parameters: bool
    """DDP: parameters off the step's path get no gradient (same path on every rank)."""

    def arch(self, dist: Dist) -> Any:
        """The architecture of the next step (identical on every rank), or None."""

    def forward(self, net: nn.Module, x: torch.Tensor, arch: Any) -> torch.Tensor: ...

    def guard(self, opt: torch.optim.Optimizer, arch: Any) -> contextlib.AbstractContextManager:
        """A context around the optimizer step (e.g. restoring unused slices)."""

    def state_dict(self) -> dict[str, Any] | None: ...

    def load_state_dict(self, state: dict[str, Any] | None) -> None: ...


class FixedArchPolicy:
    """A standalone network: one architecture, plain ``net(x)``, nothing to guard."""

    find_unused_parameters = False

    def arch(self, dist: Dist) -> None:
        return None

    def forward(self, net: nn.Module, x: torch.Tensor, arch: Any) -> torch.Tensor:
        return net(x)

    def guard(self, opt: torch.optim.Optimizer, arch: Any) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def state_dict(self) -> None:
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        return None


class SupernetPolicy:
    """One sampled path per step (rank 0 samples, every rank runs it); unused slices stay put.

    Args:
        supernet: the ``Supernet`` being trained (its ``partial_parameters`` name the slices).
        sampler: the path sampler (``nas.sampling``); its RNG state is the policy's state.
    """

    find_unused_parameters = True

    def __init__(self, supernet: nn.Module, sampler: Any) -> None:
        self.supernet, self.sampler = supernet, sampler
        self.sliced = len(supernet.space.channel_scales) > 1 or supernet.sharing != "independent"

    def arch(self, dist: Dist) -> np.ndarray:
        row = self.sampler.sample(1)[0] if dist.main else None
        return dist.broadcast_batch(row, (self.supernet.space.num_blocks, 4))

    def forward(self, net: nn.Module, x: torch.Tensor, arch: np.ndarray) -> torch.Tensor:
        return net(x, arch)

    def guard(self, opt: torch.optim.Optimizer, arch: np.ndarray) -> contextlib.AbstractContextManager:
        if not self.sliced:
            return contextlib.nullcontext()
        return keep_unused_slices(opt, self.supernet.partial_parameters(arch))

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.sampler.load_state_dict(state)


class Trainer:
    """One run: model, policy, SGD, linear schedule and data order.

    ``step`` counts finished optimizer steps. ``state_dict()``/``load_state_dict()`` cover
    everything a resumed run needs; ``run(until)`` trains up to a step.
    """

    def __init__(
        self,
        model: nn.Module,
        policy: Policy | None = None,
        *,
        data: ImageData,
        order: BatchOrder,
        config: TrainConfig,
        dist: Dist,
    ) -> None:
        self.cfg, self.data, self.order, self.dist = config, data, order, dist
        self.policy: Policy = policy or FixedArchPolicy()
        self.device = dist.device
        self.cuda = self.device.type == "cuda"
        self.channels_last = True  # ~25% faster convs on CPU (mkldnn), the fast layout for AMP on CUDA
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self._projected = [m for m in model.modules() if callable(getattr(m, "project_", None))]
        self.chunks = dist.world * config.accum
        if config.batch_size % self.chunks:
            raise ConfigError(f"batch size {config.batch_size} is not divisible by ranks x accum = {self.chunks}")
        self.net: nn.Module = self.model
        if dist.active:
            ddp = nn.parallel.DistributedDataParallel
            # BN statistics stay rank-local during training (no broadcast every forward) and are
            # averaged over ranks at each checkpoint; newer torch renamed the switch
            no_sync_buffers = (
                "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters else "broadcast_buffers"
            )
            self.net = ddp(
                self.model,
                device_ids=[self.device.index] if self.cuda else None,
                find_unused_parameters=self.policy.find_unused_parameters,  # same path on every rank: the rest keeps grad None
                **{no_sync_buffers: False},
            )
        self.opt = torch.optim.SGD(
            param_groups(self.model, config.weight_decay, config.lr), lr=config.lr, momentum=config.momentum
        )
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
            "sampler": self.policy.state_dict(),
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
        self.policy.load_state_dict(state.get("sampler"))
        self.step = int(state["step"])
        self.curve = list(state["curve"])
        self._window = torch.tensor(state["window"], dtype=torch.float64, device=self.device)
        self.elapsed = float(state["elapsed_s"])
        if state.get("chunks") != self.chunks:
            log.warning(
                "resuming with %d BN groups per step (ranks x accum) instead of %d: training continues, "
                "but not bit-identically to the original run",
                self.chunks,
                state.get("chunks"),
            )

    # --- one step
    def _rank_indices(self, step: int) -> np.ndarray:
        per_rank = self.cfg.batch_size // self.dist.world
        return self.order.batch(step)[self.dist.rank * per_rank : (self.dist.rank + 1) * per_rank]

    def _train_step(self, images: torch.Tensor, idx: np.ndarray) -> None:
        cfg, accum = self.cfg, self.cfg.accum
        row = self.policy.arch(self.dist)
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
                logits = self.policy.forward(self.net, x, row)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            (self.scaler.scale(loss / accum) if self.scaler else loss / accum).backward()
            with torch.no_grad():
                self._window[0] += loss.detach().double() * len(y)
                self._window[1] += (logits.argmax(1) == y).sum()
                self._window[2] += len(y)
        with self.policy.guard(self.opt, row):
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
        on_checkpoint: Callable[[Trainer], None] | None = None,
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
                        log.info(
                            "step %d/%d  loss %.4f  acc %.4f  lr %.4g  %.3f s/step",
                            self.step,
                            cfg.steps,
                            p["loss"],
                            p["acc"],
                            p["lr"],
                            p["s_per_step"],
                        )
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


def _fork_rng(dist: Dist):
    return torch.random.fork_rng(devices=[dist.device.index or 0] if dist.device.type == "cuda" else [])


__all__ = [
    "STEP_LR_SCALE",
    "FixedArchPolicy",
    "Policy",
    "SupernetPolicy",
    "Trainer",
    "keep_unused_slices",
    "linear_decay",
    "param_groups",
]
