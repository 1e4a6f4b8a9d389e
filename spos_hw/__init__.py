"""spos-hw: hardware-aware Single Path One-Shot NAS.

The pipeline from Python (each step takes a config object or its fields as keywords and
returns the summary its command prints with ``--json``)::

    import spos_hw

    spos_hw.profile(space="shufflenetv2-small", out="lut.json")
    spos_hw.train_supernet(space="shufflenetv2-small", data="digits", steps=300, out="supernet.pt")
    best = spos_hw.search(supernet="supernet.pt", budgets={"latency": 0.4}, lut="lut.json")
    spos_hw.retrain(arch=best["arch"], space="shufflenetv2-small", data="digits", out="model.pt")
    spos_hw.export(checkpoint="model.pt", out="model.onnx")

``data`` may also be your own ``torch.utils.data.Dataset`` pair: ``spos_hw.Datasets(train, test)``.
Names are loaded on first use, so ``import spos_hw`` stays cheap (no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = {
    "profile": "spos_hw.api",
    "validate_lut": "spos_hw.api",
    "train_supernet": "spos_hw.api",
    "search": "spos_hw.api",
    "retrain": "spos_hw.api",
    "rank_check": "spos_hw.api",
    "export": "spos_hw.api",
    "info": "spos_hw.api",
    "cost_models": "spos_hw.api",
    "run_demo": "spos_hw.demo",
    "get_space": "spos_hw.nas.spaces",
    "list_spaces": "spos_hw.nas.spaces",
    "Arch": "spos_hw.nas.space",
    "SearchSpace": "spos_hw.nas.space",
    "Datasets": "spos_hw.nas.data",
    "SupernetConfig": "spos_hw.nas.config",
    "RetrainConfig": "spos_hw.nas.config",
    "SearchConfig": "spos_hw.nas.config",
    "RankCheckConfig": "spos_hw.nas.config",
    "ProfileConfig": "spos_hw.latency.config",
    "ValidateConfig": "spos_hw.latency.config",
    "ExportConfig": "spos_hw.deploy.config",
    "DemoConfig": "spos_hw.demo",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'spos_hw' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
