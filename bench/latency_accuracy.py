"""Latency predictor: table build time, accuracy on fresh subnets, prediction throughput.

    python bench/latency_accuracy.py [--space shufflenetv2-small --space ...] [--samples 50] [--json]
                                     [--tables DIR] [--compose] [--runtime onnxruntime] [--threads 1]

For each space: builds the whole table on ONNX Runtime CPU (batch 1, default protocol: thread
clock, min of 20 interleaved rounds x 10 runs, 10 calibration subnets) and times it; validates it
on --samples fresh random subnets measured twice (validate-lut); times the compiled predictor on
1e6 architectures in one vectorized call (one core) against a per-architecture Python loop over
the table. Every figure is printed beside its target. Run it at normal priority on a quiet
machine; other processes' load shows up in the re-test figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from common import median_time, print_table

TARGETS = {
    "build_s": ("<= 300 (imagenet)", lambda v, space: v <= 300 or "imagenet" not in space),
    "mape": ("<= 3 %", lambda v, space: v <= 3),
    "within_5pct": (">= 90 %", lambda v, space: v >= 0.90),
    "within_10pct": ("100 %", lambda v, space: v >= 1.0),
    "tau_ratio": (">= 0.9 (tau / re-test tau)", lambda v, space: v >= 0.9),
    "throughput": (">= 1e6 archs/s", lambda v, space: v >= 1e6),
}


def per_arch_loop(table, space, batch: np.ndarray) -> np.ndarray:
    """The naive predictor: per architecture, look every block's signature up in the table."""
    stat = table.protocol.statistic
    cal = table.calibration
    fixed = table.fixed["stem"][stat] + table.fixed["head"][stat]
    out = np.empty(len(batch))
    for i, row in enumerate(batch):
        s = fixed + sum(table.entries[space.signature(p, row[p.index])][stat] for p in space.positions)
        out[i] = cal["slope"] * s + cal["intercept"]
    return out


def bench_space(name: str, args) -> tuple[list[list], dict]:
    from spos_hw.latency.predictor import predictor_from_table
    from spos_hw.latency.profile import profile_space
    from spos_hw.latency.table import LatencyTable
    from spos_hw.latency.validate import validate_table
    from spos_hw.nas.spaces import get_space

    space = get_space(name)
    os.makedirs(args.tables, exist_ok=True)
    path = os.path.join(args.tables, f"lut_{name}.json")
    build_s = None
    if os.path.exists(path) and not args.rebuild:
        table = LatencyTable.load(path)
        table.check(space)
    else:
        t = time.perf_counter()
        table = profile_space(space, runtime=args.runtime, threads=args.threads, out=path, overwrite=True, progress=not args.json)
        build_s = time.perf_counter() - t
    report = validate_table(
        table,
        samples=args.samples,
        seed=args.seed,
        space=space,
        compose=args.compose,
        plot=os.path.join(args.tables, f"validate_{name}.png"),
        progress=not args.json,
    )
    with open(os.path.join(args.tables, f"validate_{name}.json"), "w") as fh:
        json.dump(report, fh, indent=1)

    cost = predictor_from_table(table, space)
    batch = space.sample(np.random.default_rng(0), args.n)
    vec_s = median_time(lambda: cost.cost(batch), repeats=5)
    few = batch[:2000]
    loop_s = median_time(lambda: per_arch_loop(table, space, few), repeats=3) / len(few)
    np.testing.assert_allclose(per_arch_loop(table, space, few[:50]), cost.cost(few[:50]), rtol=1e-9)
    throughput = args.n / vec_s

    cal = table.calibration
    values = {
        "build_s": build_s,
        "mape": report["mape"],
        "within_5pct": report["within_5pct"],
        "within_10pct": report["within_10pct"],
        "tau_ratio": report["tau_ratio"],
        "throughput": throughput,
    }
    shown = {
        "build_s": "reused table" if build_s is None else f"{build_s:.0f} s",
        "mape": f"{report['mape']:.2f} %",
        "within_5pct": f"{report['within_5pct'] * 100:.0f} %",
        "within_10pct": f"{report['within_10pct'] * 100:.0f} %",
        "tau_ratio": f"{report['kendall_tau']:.3f} / {report['retest_kendall_tau']:.3f} = {report['tau_ratio']:.2f}",
        "throughput": f"{throughput:.3g} /s ({throughput * loop_s:.0f}x the per-arch loop, {1 / loop_s:.3g} /s)",
    }
    rows = []
    for key, (target, ok) in TARGETS.items():
        v = values[key]
        rows.append([name, key, shown[key], target, "-" if v is None else ("yes" if ok(v, name) else "NO")])
    extra = {
        "retest_mape_pct": round(report["retest_mape"], 3),
        "bias_pct": round(report["bias_pct"], 3),
        "max_abs_error_pct": round(report["max_abs_error_pct"], 3),
        "measured_spread_pct": round(report["measured_spread_pct"], 3),
        "calibration": f"{cal['slope']:.4f} x table + {cal['intercept']:.4f} ms on {cal['n']} subnets",
        "protocol": table.protocol.to_json(),
        "entries": len(table.entries),
        "subnet_onnx": report["subnet_onnx"],
        "samples": report["samples"],
        "table": path,
    }
    return rows, extra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", action="append", help="space(s) to bench (default: shufflenetv2-small and -imagenet)")
    ap.add_argument("--samples", type=int, default=50, help="fresh subnets per space")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1_000_000, help="architectures per vectorized call")
    ap.add_argument("--tables", default="bench_out", help="folder for the tables and plots")
    ap.add_argument("--rebuild", action="store_true", help="rebuild tables that already exist in --tables")
    ap.add_argument("--compose", action="store_true", help="validate-lut --compose (faster subnet ONNX)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows, extras = [], {}
    for name in args.space or ["shufflenetv2-small", "shufflenetv2-imagenet"]:
        r, e = bench_space(name, args)
        rows += r
        extras[name] = e
    print_table(
        f"Latency predictor on {args.runtime} CPU, batch 1, {args.threads} thread(s)",
        ["space", "figure", "measured", "target", "met"],
        rows,
        args.json,
        extras,
    )


if __name__ == "__main__":
    main()
