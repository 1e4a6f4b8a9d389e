"""What the demo does at each budget (``Preset``), and its one config (``DemoConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spos_hw.errors import ConfigError
from spos_hw.nas.config import threads_rule

SPACE = "shufflenetv2-small"


@dataclass(frozen=True)
class Preset:
    """How much work each step does (the README's demo table has the measurements behind the numbers)."""

    rounds: int  # latency protocol rounds (table and measurement)
    calibrate: int  # whole subnets measured for the table's calibration
    validate: int  # fresh subnets measured for the predicted-vs-measured plot
    supernet_epochs: float
    population: int
    generations: int
    recal_images: int  # BN recalibration images per candidate
    holdout: int  # held-out images scored per candidate
    retrain_epochs: float
    percentile: float = 40.0  # latency budget: this percentile of the space's predicted latencies
    retrain_init: str = "scratch"  # scratch | supernet (fine-tune the inherited weights)
    retrain_lr: float | None = None  # None: the dataset's
    retrain_augment: bool | None = None  # None: the dataset's
    compare: int = 5  # random feasible nets shown beside the searched one, at the same budget
    compare_epochs: float | None = None  # also retrain those (and the searched net) alone for this long
    batch_sizes: tuple[int, ...] = (1, 8, 32)  # profiled in turn until the latency spread is >= 3x the noise


PRESETS = {
    "quick": Preset(
        rounds=8,
        calibrate=8,
        validate=10,
        supernet_epochs=1.0,
        population=10,
        generations=4,
        recal_images=512,
        holdout=1000,
        retrain_epochs=8.0,
    ),
    "full": Preset(
        rounds=20,
        calibrate=10,
        validate=50,
        supernet_epochs=10.0,
        population=50,
        generations=20,
        recal_images=2048,
        holdout=6000,
        retrain_epochs=20.0,
        compare_epochs=0.5,
    ),
}


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """``spos-hw demo``: the whole pipeline in one work folder."""

    workdir: str = "demo"  # where every artifact goes; a rerun skips finished steps
    budget: str = "quick"  # quick (~10 min on 2 CPU cores) | full (hours, higher accuracy)
    data: Any = "auto"  # auto (Fashion-MNIST if installed, else digits) | fashion-mnist | digits | a folder | Datasets
    threads: int | None = None  # torch CPU threads for training and search; latency is always timed on 1 thread
    seed: int = 0  # seed of every step
    space: str = SPACE  # the search space
    preset: Preset | None = None  # replaces the budget's preset (the tests run a tiny one)

    def __post_init__(self) -> None:
        if self.budget not in PRESETS and self.preset is None:
            raise ConfigError(f"unknown budget {self.budget!r}; choose one of {', '.join(PRESETS)}")
        ok, msg = threads_rule(self.threads)
        if not ok:
            raise ConfigError(msg)

    @property
    def work(self) -> Preset:
        return self.preset or PRESETS[self.budget]


def pick_data(data: Any) -> Any:
    """``auto``: Fashion-MNIST when the Debian package is installed, else scikit-learn's digits (with a warning)."""
    import logging

    from spos_hw.nas.data import FASHION_MNIST_DIR

    if data != "auto":
        return data
    if Path(FASHION_MNIST_DIR).is_dir():
        return "fashion-mnist"
    logging.getLogger(__name__).warning(
        "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); "
        "falling back to scikit-learn's digits, so the accuracy target does not apply"
    )
    return "digits"


__all__ = ["PRESETS", "SPACE", "DemoConfig", "Preset", "pick_data"]
