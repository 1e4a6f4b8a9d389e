"""Configs of ``spos-hw profile`` and ``spos-hw validate-lut``, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from spos_hw.errors import ConfigError
from spos_hw.latency.runtimes import RUNTIMES
from spos_hw.nas.config import threads_rule
from spos_hw.protocol import CLOCKS, STATISTICS, Protocol, default_clock


def _int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    """Measure a space's latency table, or (``export_bundle``) write a bundle for a board without
    torch, or (``import_measurements``) turn a bundle runner's measurements into a table."""

    space: str | None = None  # the space to profile (a name, NAME:overrides, or a .json spec)
    device: str = "cpu"  # cpu | cuda | cuda:N
    runtime: str = "onnxruntime"  # torch | onnxruntime | tensorrt
    batch_size: int = 1
    threads: int = 1  # intra-op threads, fixed and recorded
    calibrate: int = 10  # whole subnets measured to fit the calibration
    rounds: int = 20  # interleaved rounds
    repeats: int = 10  # timed runs per entry per round
    warmup: int = 10  # untimed runs per entry first
    statistic: str = "min"  # min (robust to other load) | median (quiet devices)
    clock: str = "auto"  # auto | wall | thread (auto: thread for 1 thread on cpu, else wall)
    seed: int = 0  # picks the calibration subnets
    out: str = "lut.json"
    resume: bool = False  # continue the partial table at `out`
    overwrite: bool = False  # replace an existing `out` (or bundle folder)
    export_bundle: str | None = None  # do not measure: write ONNX models + a runner to this folder
    import_measurements: str | None = None  # a bundle runner's measurements file -> a table at `out`

    def __post_init__(self) -> None:
        if self.export_bundle and self.import_measurements:
            raise ConfigError("--export-bundle and --import-measurements are separate steps; give one")
        if not self.space and not self.import_measurements:
            raise ConfigError("missing option --space (the space to profile)")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"unknown --runtime {self.runtime!r}; choose from {', '.join(RUNTIMES)}")
        ok, msg = threads_rule(self.threads)
        if not ok or self.threads is None:
            raise ConfigError(msg)
        for name, lo in (("batch_size", 1), ("calibrate", 0), ("rounds", 1), ("repeats", 1), ("warmup", 0)):
            _int("--" + name.replace("_", "-"), getattr(self, name), lo)
        if self.statistic not in STATISTICS:
            raise ConfigError(f"--statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.clock not in ("auto", *CLOCKS):
            raise ConfigError(f"--clock must be auto, {' or '.join(CLOCKS)}, got {self.clock!r}")
        if self.resume and self.overwrite:
            raise ConfigError("give --resume or --overwrite, not both")

    def protocol(self) -> Protocol:
        """The timing protocol (``auto`` clock: the thread clock for single-threaded CPU runs)."""
        from spos_hw.latency.runtimes import parse_device

        device = "cpu" if self.export_bundle else parse_device(self.device)
        clock = default_clock(device, self.threads) if self.clock == "auto" else self.clock
        return Protocol(warmup=self.warmup, rounds=self.rounds, repeats=self.repeats, statistic=self.statistic, clock=clock)


@dataclass(frozen=True, kw_only=True)
class ValidateConfig:
    """Measure fresh subnets twice with a table's runtime and protocol; report the predictor's accuracy."""

    lut: str  # the latency table to validate
    samples: int = 50  # fresh random subnets
    seed: int = 1
    space: str | None = None  # default: the table's own space
    plot: str | None = None  # a predicted-vs-measured PNG
    overwrite: bool = False  # replace an existing `plot`
    compose: bool = False  # ONNX runtimes: chain each subnet from block graphs exported in one batch

    def __post_init__(self) -> None:
        _int("--samples", self.samples, 2)


__all__ = ["ProfileConfig", "ValidateConfig"]
