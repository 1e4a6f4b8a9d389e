"""Configs of the nas commands (train-supernet, retrain, search) and the datasets' training recipes.

Every config is a frozen, keyword-only dataclass that validates itself on construction, so the
CLI and Python callers get the same one-line errors. ``None`` fields resolve to defaults later
(``resolve`` fills a training config from the dataset's recipe once its size is known).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spos_hw.errors import ConfigError


def check(*rules: tuple[bool, str]) -> None:
    """Raise ``ConfigError`` with the message of the first rule that does not hold."""
    for ok, msg in rules:
        if not ok:
            raise ConfigError(msg)


def threads_rule(threads: int | None) -> tuple[bool, str]:
    """The one rule for ``--threads`` (every command shares it)."""
    return threads is None or (isinstance(threads, int) and threads >= 1), f"--threads must be >= 1, got {threads}"


def positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# ----------------------------------------------------------------------------- training


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """What both training commands share. ``None`` fields resolve to the dataset's defaults."""

    space: str  # search space: a registered name (with :classes=N,... overrides) or a .json spec
    data: Any  # fashion-mnist | digits | an ImageFolder folder | a (train, test) pair of torch Datasets
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
        check(
            (self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.epochs is None or self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.steps is None or self.epochs is None, "give steps or epochs, not both"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}"),
            (self.accum >= 1, f"accum must be >= 1, got {self.accum}"),
            (self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay is None or self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1"),
            (self.amp in ("bf16", "fp16", "off"), f"amp must be bf16, fp16 or off, got {self.amp!r}"),
            threads_rule(self.threads),
            (not (self.resume and self.overwrite), "give --resume or --overwrite, not both"),
        )


@dataclass(frozen=True, kw_only=True)
class SupernetConfig(TrainConfig):
    out: str = "supernet.pt"
    constraints: tuple[
        tuple[str, float | None, float | None], ...
    ] = ()  # (flops|params|bitops|latency, lo, hi) in display units; None: the bound
    bins: int = 7  # bins of the first constraint's range (paper: 7)
    sampling: str = "auto"  # exact (DP, additive costs) | rejection (paper) | auto
    lut: str | None = None  # latency table for a latency constraint
    holdout: float = 0.1  # training data held out for search scoring: a fraction, or a count if >= 1
    holdout_seed: int = 0  # seed of the stratified held-out split (search reproduces it)
    sharing: str = "entangled"  # entangled (choices differing in kernel/width share weights) | independent (the paper)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "constraints", tuple(tuple(c) for c in self.constraints))
        check(
            (all(len(c) == 3 for c in self.constraints), "a constraint is (cost, lo, hi)"),
            (
                not any(c[0] == "latency" for c in self.constraints) or self.lut is not None,
                "a latency constraint needs a latency table: pass --lut lut.json (made by `spos-hw profile`)",
            ),
            (self.holdout >= 0, f"--holdout must be >= 0, got {self.holdout}"),
            (self.sharing in ("entangled", "independent"), f"--sharing must be entangled or independent, got {self.sharing!r}"),
        )


INITS = ("scratch", "supernet")


@dataclass(frozen=True, kw_only=True)
class RetrainConfig(TrainConfig):
    arch: str  # canonical architecture string (validated against the space)
    out: str = "model.pt"
    eval_batch_size: int = 500  # test-time batch
    init: str = "scratch"  # scratch (the paper) | supernet: fine-tune the inherited, BN-recalibrated weights (Once-for-All)
    supernet: str | None = None  # the supernet checkpoint to inherit from (init=supernet)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            (self.init in INITS, f"--init must be scratch or supernet, got {self.init!r}"),
            (
                self.init == "scratch" or self.supernet is not None,
                "--init supernet needs --supernet supernet.pt (the weights to inherit)",
            ),
            (self.init == "supernet" or self.supernet is None, "--supernet is only read with --init supernet"),
        )


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


SUPERNET_LR_SCALE = 2.0
"""A supernet's default lr is twice its dataset's (a fixed net's stays the recipe's). Measured on
Fashion-MNIST, ``shufflenetv2-small``, entangled, 400 steps at batch 128, mean held-out accuracy of
8 random archs: lr 0.1 46.3%, 0.2 62.1%, 0.3 55.7% (wd 5e-5); wd 0 instead: 58.4% at 0.2, 57.8% at
0.3 (docs/training.md). Each path is trained on a fraction of the steps, so the shared weights
want a larger step than one net does."""


def resolve(config: TrainConfig, n_train: int) -> TrainConfig:
    """Fill the dataset defaults (lr, weight decay, steps) into ``config``; a supernet doubles the lr (above)."""
    recipe = RECIPES.get(config.data, PAPER) if isinstance(config.data, str) else PAPER
    supernet = isinstance(config, SupernetConfig)
    spe = max(1, n_train // config.batch_size)
    steps = config.steps or max(1, math.ceil((config.epochs or recipe.epochs) * spe))
    lr = recipe.lr_per_256 * config.batch_size / 256 * (SUPERNET_LR_SCALE if supernet else 1.0)
    return dataclasses.replace(
        config,
        steps=steps,
        epochs=None,
        lr=config.lr if config.lr is not None else lr,
        weight_decay=config.weight_decay if config.weight_decay is not None else recipe.weight_decay,
        augment=config.augment if config.augment is not None else recipe.augment,
    )


RECIPE_FIELDS = ("lr", "weight_decay", "augment")
"""Options whose default comes from the recipe: a resumed run that leaves them out continues with
the values its checkpoint recorded (so a run started under older defaults still resumes)."""


# ----------------------------------------------------------------------------- search

BUDGET_KINDS = ("latency", "flops", "params", "bitops")
EVOLUTION_ONLY = ("topk", "mutations", "crossovers", "mutation_prob")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """``spos-hw search``: evolution (or random search) of a trained supernet under budgets.

    With ``report`` set, nothing is scored: the best candidate of the search in that folder is
    picked again under ``budgets``.
    """

    supernet: str | None = None  # a `spos-hw train-supernet` checkpoint
    budgets: Mapping[str, float | None] = field(default_factory=dict)  # {latency: ms, flops: M, params: M, bitops: G}
    lut: str | None = None  # latency table (needed by a latency budget)
    data: Any = None  # the dataset (default: the one the supernet was trained on)
    strategy: str = "evolution"  # evolution | random
    population: int | None = None  # candidates per generation [50]
    generations: int | None = None  # evaluated generations, the initial one included [20]
    topk: int | None = None  # evolution: parents [population / 5]
    mutations: int | None = None  # evolution: mutated children per generation [population / 2]
    crossovers: int | None = None  # evolution: crossover children per generation [population / 2]
    mutation_prob: float | None = None  # evolution: per-block redraw probability [0.1]
    recal_images: int | None = None  # BN recalibration images [the paper's share of the training split]
    recal_batch_size: int = 128  # BN statistics depend on it (the paper: 128)
    holdout: int | None = None  # held-out images scored per candidate [all]
    eval_batch_size: int = 500  # held-out scoring batch (does not change scores)
    seed: int = 0  # the search's RNG and the choice of recalibration images
    out: str = "search"  # output folder
    resume: bool = False  # continue the search saved in `out`
    overwrite: bool = False  # replace an earlier search in `out`
    device: str = "auto"  # auto | cpu | cuda[:N]
    threads: int | None = None  # torch CPU threads
    checkpoint_s: float = 30.0  # mid-generation checkpoint interval
    report: str | None = None  # re-pick from the finished search in this folder instead of searching

    def __post_init__(self) -> None:
        budgets = dict(self.budgets or {})
        unknown = sorted(set(budgets) - set(BUDGET_KINDS))
        check((not unknown, f"unknown budget {unknown[0] if unknown else ''!r}; choose from {', '.join(BUDGET_KINDS)}"))
        object.__setattr__(self, "budgets", {k: budgets.get(k) for k in BUDGET_KINDS})
        given = {k: v for k, v in self.budgets.items() if v is not None}
        evo = [k for k in EVOLUTION_ONLY if getattr(self, k) is not None]
        check(
            (
                self.budgets["latency"] is None or self.lut is not None,
                "--latency-ms needs a latency table: pass --lut lut.json (made by `spos-hw profile`)",
            ),
            (
                self.report is not None or self.supernet is not None,
                "pass --supernet supernet.pt (or --report DIR to re-pick from a finished search)",
            ),
            (bool(given), "give at least one budget: --latency-ms (with --lut), --flops-m, --params-m or --bitops-g"),
            (
                self.strategy in ("evolution", "random"),
                f"unknown search strategy {self.strategy!r}; choose one of evolution, random",
            ),
            (
                self.strategy == "evolution" or not evo,
                "--topk, --mutations, --crossovers and --mutation-prob apply to --strategy evolution only",
            ),
            threads_rule(self.threads),
            (not (self.resume and self.overwrite), "give --resume or --overwrite, not both"),
            (self.checkpoint_s > 0, f"checkpoint_s must be > 0, got {self.checkpoint_s}"),
        )

    def strategy_options(self) -> dict[str, Any]:
        """The strategy's keyword options that were given (the rest take the strategy's defaults)."""
        names = ("population", "generations") + (EVOLUTION_ONLY if self.strategy == "evolution" else ())
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


@dataclass(frozen=True, kw_only=True)
class RankCheckConfig:
    """``spos-hw rank-check``: does the supernet rank architectures as training them alone does?

    ``archs`` architectures, one per equal-width bin of the ``stratify`` cost between its 1st and
    99th percentile (within ``budgets`` if given), each retrained with one fixed short recipe;
    ``repeated`` of them also with ``seeds - 1`` more seeds, for the noise ceiling.
    """

    supernet: str  # a `spos-hw train-supernet` checkpoint
    out: str = "rank-check"  # folder: plan, scores, retrains (each a resumable unit), rank_check.json/.png
    archs: int = 30  # architectures, stratified by cost
    repeated: int = 10  # of them retrained with more seeds (noise ceiling: tau between seeds)
    seeds: int = 2  # seeds of the repeated architectures
    stratify: str = "flops"  # flops | params | bitops | latency (needs lut)
    lut: str | None = None  # latency table (for latency budgets or stratification)
    budgets: Mapping[str, float | None] = field(default_factory=dict)  # upper limits, as search takes them
    data: Any = None  # the dataset (default: the supernet's)
    epochs: float | None = None  # retrain recipe: passes over the training data [0.5]
    steps: int | None = None  # ... or optimizer steps
    batch_size: int = 128
    lr: float | None = None  # [the dataset's]
    recal_images: int | None = None  # supernet scoring, as search [the paper's share]
    holdout: int | None = None  # held-out images scored [all]
    seed: int = 0  # the architecture draw, and the first retrain seed
    resamples: int = 2000  # bootstrap resamples of the confidence intervals
    threads: int | None = None
    device: str = "auto"
    resume: bool = False  # continue the check in `out` (finished retrains are kept)
    overwrite: bool = False  # start the check in `out` again

    def __post_init__(self) -> None:
        budgets = dict(self.budgets or {})
        unknown = sorted(set(budgets) - set(BUDGET_KINDS))
        check((not unknown, f"unknown budget {unknown[0] if unknown else ''!r}; choose from {', '.join(BUDGET_KINDS)}"))
        object.__setattr__(self, "budgets", {k: budgets.get(k) for k in BUDGET_KINDS})
        if self.epochs is None and self.steps is None:
            object.__setattr__(self, "epochs", 0.5)
        check(
            (positive_int(self.archs) and self.archs >= 3, f"--archs must be an integer >= 3, got {self.archs!r}"),
            (
                isinstance(self.repeated, int) and 0 <= self.repeated <= self.archs,
                f"--repeated must be in 0..{self.archs} (--archs), got {self.repeated!r}",
            ),
            (
                positive_int(self.seeds) and (self.seeds >= 2 or self.repeated == 0),
                f"--seeds must be >= 2 when archs are repeated, got {self.seeds!r}",
            ),
            (
                self.stratify in ("flops", "params", "bitops", "latency"),
                f"--stratify must be flops, params, bitops or latency, got {self.stratify!r}",
            ),
            (
                (self.stratify != "latency" and self.budgets["latency"] is None) or self.lut is not None,
                "a latency budget or --stratify latency needs a latency table: pass --lut lut.json (made by `spos-hw profile`)",
            ),
            (self.steps is None or self.epochs is None, "give steps or epochs, not both"),
            (self.steps is None or positive_int(self.steps), f"--steps must be >= 1, got {self.steps}"),
            (self.epochs is None or self.epochs > 0, f"--epochs must be > 0, got {self.epochs}"),
            (positive_int(self.batch_size), f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be > 0, got {self.lr}"),
            (positive_int(self.resamples), f"resamples must be >= 1, got {self.resamples}"),
            threads_rule(self.threads),
            (not (self.resume and self.overwrite), "give --resume or --overwrite, not both"),
        )

    def budget_values(self) -> dict[str, float]:
        return {k: v for k, v in self.budgets.items() if v is not None}


__all__ = [
    "PAPER",
    "RECIPES",
    "RankCheckConfig",
    "Recipe",
    "RetrainConfig",
    "SearchConfig",
    "SupernetConfig",
    "TrainConfig",
    "check",
    "positive_int",
    "resolve",
    "threads_rule",
]
