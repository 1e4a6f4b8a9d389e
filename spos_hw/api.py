"""The public Python API: one function per step of the pipeline, each taking one config.

Every function takes its config object, or the config's fields as keywords, and returns the
JSON-able summary the matching command prints with ``--json``. This layer wires the packages
together (``nas`` trains and searches, ``latency`` prices, ``export`` ships): it is the only
place that hands a latency table to training and search, so ``nas`` never imports ``latency``.

Example (the whole pipeline on scikit-learn's digits; see the README)::

    import spos_hw

    spos_hw.profile(space="shufflenetv2-small", out="lut.json")
    spos_hw.train_supernet(space="shufflenetv2-small", data="digits", steps=300, out="supernet.pt")
    best = spos_hw.search(supernet="supernet.pt", budgets={"latency": 0.4}, lut="lut.json", out="search")
    spos_hw.retrain(arch=best["arch"], space="shufflenetv2-small", data="digits", epochs=5, out="model.pt")
    spos_hw.export(checkpoint="model.pt", out="model.onnx")
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from spos_hw.deploy.config import ExportConfig
from spos_hw.errors import ConfigError, MissingDependency
from spos_hw.latency.config import ProfileConfig, ValidateConfig
from spos_hw.nas.config import RankCheckConfig, RetrainConfig, SearchConfig, SupernetConfig
from spos_hw.nas.costs import builtin_costs
from spos_hw.nas.data import Datasets
from spos_hw.nas.space import Arch, CostModel, SearchSpace
from spos_hw.nas.spaces import get_space

C = TypeVar("C")


def make_config(cls: type[C], config: C | None, options: dict[str, Any]) -> C:
    """``config`` itself, or a ``cls`` built from keyword options (unknown ones are a one-line error)."""
    if config is not None:
        if options:
            raise ConfigError(f"give a {cls.__name__} or keyword options, not both")
        if not isinstance(config, cls):
            raise ConfigError(f"expected a {cls.__name__}, got {type(config).__name__}")
        return config
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    return cls(**options)


def cost_models(space: SearchSpace, lut: str | Path | None = None) -> dict[str, CostModel]:
    """Every cost model of ``space``: FLOPs, params, BitOps and, given a table, predicted latency (ms)."""
    costs = dict(builtin_costs(space))
    if lut is not None:
        try:
            from spos_hw.latency.predictor import load_predictor
        except ImportError:
            raise MissingDependency(
                "the latency predictor (spos_hw.latency.predictor) is not available in this installation"
            ) from None
        costs["latency"] = load_predictor(lut, space)
    return costs


def info(arch: Any, space: str | SearchSpace, *, lut: str | Path | None = None) -> dict[str, Any]:
    """Costs of one architecture (``spos-hw info``): FLOPs, params, BitOps and, with ``lut``, predicted latency."""
    from spos_hw.nas.spaces import read_arch

    space = get_space(space) if isinstance(space, str) else space
    parsed = read_arch(space, arch)
    summary = space.summarize(parsed)
    if lut is not None:
        from spos_hw.latency.predictor import describe_table
        from spos_hw.latency.table import load_table

        blocks = summary.pop("blocks")
        summary["latency_ms"] = float(cost_models(space, lut)["latency"].cost(parsed.to_array()))
        table = describe_table(load_table(lut, space))
        summary["lut"] = {
            k: table[k]
            for k in ("runtime", "device", "batch_size", "random_arch_latency", "noise_floor_pct", "spread_over_noise")
        }
        summary["blocks"] = blocks
    return summary


def profile(config: ProfileConfig | None = None, /, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Measure a space's latency table (``spos-hw profile``); or export / import a board bundle.

    Returns the table's summary (``latency.predictor.describe_table``), or the bundle's paths.
    """
    cfg = make_config(ProfileConfig, config, options)
    from spos_hw.latency.predictor import describe_table

    if cfg.import_measurements:
        from spos_hw.latency.bundle import import_measurements

        space = get_space(cfg.space) if cfg.space else None
        table = import_measurements(cfg.import_measurements, space=space, out=cfg.out, overwrite=cfg.overwrite)
        return describe_table(table, cfg.out)
    space = get_space(cfg.space)
    protocol = cfg.protocol()
    if cfg.export_bundle:
        from spos_hw.latency.bundle import RUNNER, export_bundle

        folder = export_bundle(
            space,
            cfg.export_bundle,
            batch_size=cfg.batch_size,
            calibrate=cfg.calibrate,
            threads=cfg.threads,
            protocol=protocol,
            seed=cfg.seed,
            overwrite=cfg.overwrite,
            progress=progress,
        )
        return {
            "bundle": str(folder),
            "runner": str(folder / RUNNER),
            "space": space.name,
            "next": f"on the board: python {RUNNER} --out measurements.json; "
            "then: spos-hw profile --import-measurements measurements.json --out lut.json",
        }
    from spos_hw.latency.profile import profile_space

    table = profile_space(
        space,
        runtime=cfg.runtime,
        device=cfg.device,
        threads=cfg.threads,
        batch_size=cfg.batch_size,
        calibrate=cfg.calibrate,
        protocol=protocol,
        seed=cfg.seed,
        out=cfg.out,
        resume=cfg.resume,
        overwrite=cfg.overwrite,
        progress=progress,
    )
    return describe_table(table, cfg.out)


def validate_lut(config: ValidateConfig | None = None, /, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Measure fresh subnets twice with a table's runtime and protocol (``spos-hw validate-lut``)."""
    cfg = make_config(ValidateConfig, config, options)
    from spos_hw.io import check_new_output
    from spos_hw.latency.validate import validate_table

    if cfg.plot:
        check_new_output(cfg.plot, overwrite=cfg.overwrite)
    space = get_space(cfg.space) if cfg.space else None
    return validate_table(
        cfg.lut, samples=cfg.samples, seed=cfg.seed, space=space, plot=cfg.plot, compose=cfg.compose, progress=progress
    )


def train_supernet(
    config: SupernetConfig | None = None, /, *, progress: bool = True, stop_after: int | None = None, **options: Any
) -> dict[str, Any]:
    """Train a weight-sharing supernet, one sampled path per step (``spos-hw train-supernet``).

    ``data`` may be a dataset name, an image folder, or your own ``Datasets(train, test)``.
    ``stop_after`` stops with a checkpoint after that step (``resume=True`` continues).
    """
    cfg = make_config(SupernetConfig, config, options)
    from spos_hw.nas.runs import train_supernet as run

    return run(cfg, cost_models=lambda space: cost_models(space, cfg.lut), progress=progress, stop_after=stop_after)


def retrain(
    config: RetrainConfig | None = None, /, *, progress: bool = True, stop_after: int | None = None, **options: Any
) -> dict[str, Any]:
    """Train one architecture from scratch and report its test accuracy (``spos-hw retrain``).

    ``arch`` is an ``Arch``, its string, JSON, or a .json file (a search's ``result.json`` works).
    """
    cfg = make_config(RetrainConfig, config, options)
    from spos_hw.nas.runs import retrain as run

    return run(cfg, progress=progress, stop_after=stop_after)


def search(config: SearchConfig | None = None, /, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Search a trained supernet under budgets (``spos-hw search``); returns ``result.json``'s contents.

    ``budgets`` maps ``latency`` (ms, needs ``lut``), ``flops`` (M), ``params`` (M) and ``bitops`` (G)
    to limits. With ``report=DIR`` nothing is scored: the best of that search is picked again.
    """
    cfg = make_config(SearchConfig, config, options)
    from spos_hw.nas.search import search_supernet

    return search_supernet(cfg, cost_models=lambda space: cost_models(space, cfg.lut), progress=progress)


def rank_check(config: RankCheckConfig | None = None, /, *, progress: bool = True, **options: Any) -> dict[str, Any]:
    """Does the supernet rank architectures as training them does? (``spos-hw rank-check``)

    Kendall tau and Spearman rho (bootstrap 95% CIs) between supernet scores and stand-alone
    accuracies after one short retrain recipe, with the noise ceiling between retrain seeds.
    """
    cfg = make_config(RankCheckConfig, config, options)
    from spos_hw.nas.rank_check import rank_check as run

    return run(cfg, cost_models=lambda space: cost_models(space, cfg.lut), progress=progress)


def export(
    config: ExportConfig | None = None, /, *, progress: bool = True, verify_inputs: Any = None, **options: Any
) -> dict[str, Any]:
    """Export a retrained net (or a random-init arch) to verified ONNX or a TensorRT engine (``spos-hw export``).

    With ``check_trt=PATH`` only that ONNX file is checked against TensorRT's rules.
    """
    cfg = make_config(ExportConfig, config, options)
    if cfg.check_trt is not None:
        from spos_hw.deploy.trt_check import check_trt_file

        return check_trt_file(cfg.check_trt, cfg.trt_version)
    from spos_hw.deploy.model import export_model

    return export_model(cfg, verify_inputs=verify_inputs, progress=progress)


__all__ = [
    "Arch",
    "Datasets",
    "ExportConfig",
    "ProfileConfig",
    "RankCheckConfig",
    "RetrainConfig",
    "SearchConfig",
    "SupernetConfig",
    "ValidateConfig",
    "cost_models",
    "export",
    "get_space",
    "info",
    "profile",
    "rank_check",
    "retrain",
    "search",
    "train_supernet",
    "validate_lut",
]
