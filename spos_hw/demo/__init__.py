"""The whole pipeline on the built-in default: what ``spos-hw demo`` and ``make demo`` run.

profile (ONNX Runtime, CPU, at a batch size where latency budgets bind) -> train the supernet
(latency-constrained sampling) -> search under a latency budget from the table -> score random
nets of the same budget beside the winner -> retrain the winner -> export ONNX + verify in ORT
-> measure the exported net's real latency against the budget, then ``summary.json``,
``report.md`` and PNGs. Every step is recorded in ``DIR/demo_state.json`` (``demo.state``).
"""

from spos_hw.demo.config import PRESETS, SPACE, DemoConfig, Preset, pick_data
from spos_hw.demo.pipeline import SPREAD_OVER_NOISE, Demo, latency_budget, run_demo
from spos_hw.demo.report import report_markdown, verdict
from spos_hw.demo.state import STATE, Workdir

__all__ = [
    "PRESETS",
    "SPACE",
    "SPREAD_OVER_NOISE",
    "STATE",
    "Demo",
    "DemoConfig",
    "Preset",
    "Workdir",
    "latency_budget",
    "pick_data",
    "report_markdown",
    "run_demo",
    "verdict",
]
