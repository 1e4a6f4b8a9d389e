"""Why do the demo's validation, the table and an independent measurement disagree? Side by side.

    python bench/latency_agreement.py --lut lut.json [--nets 10] [--passes 2] [--json]

One table (its space, batch and protocol), ``--nets`` fresh random subnets, each prepared two ways
(exported on its own, as ``spos-hw export`` writes it; and composed from block graphs, as
``validate-lut --compose`` and the calibration build it), then timed under several regimes in one
process, ``--passes`` times each (the passes give the re-test noise):

* ``alone``: one net at a time, ``warmup`` runs then ``repeats`` back-to-back runs, io_binding
  (the independent measurement of issue 14);
* ``interleaved, per-turn warm-up W``: every net one turn per round in a shuffled order (the
  protocol of profile / validate-lut), with W untimed runs opening each turn;
* ``session.run()``: alone, but through ``InferenceSession.run`` with numpy feeds (call overhead).

Every regime reports the predictor's MAPE and bias against it, and its re-test MAPE between passes.
The statistic is the protocol's (the minimum by default: other load only adds time).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from common import print_table


def run_timer(session, clock_ns):
    """``timer(n)`` through ``session.run`` with numpy feeds: what a plain Python caller pays."""
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    name = inp.name
    run = session.run

    def timer(n: int) -> list[float]:
        out = [0.0] * n
        for i in range(n):
            t = clock_ns()
            run(None, {name: x})
            out[i] = (clock_ns() - t) / 1e6
        return out

    return timer


def interleaved(timers: dict, rounds: int, repeats: int, turn_warmup: int, stat) -> dict[str, float]:
    samples: dict[str, list[float]] = {k: [] for k in timers}
    for k in timers:
        timers[k](10)
    for r in range(rounds):
        order = list(timers)
        random.Random(r).shuffle(order)
        for k in order:
            if turn_warmup:
                timers[k](turn_warmup)
            samples[k] += timers[k](repeats)
    return {k: stat(v) for k, v in samples.items()}


def alone(timers: dict, warmup: int, runs: int, stat) -> dict[str, float]:
    out = {}
    for k, t in timers.items():
        t(warmup)
        out[k] = stat(t(runs))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", required=True)
    ap.add_argument("--nets", type=int, default=10)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from spos_hw.deploy.onnx import export_onnx
    from spos_hw.latency.predictor import predictor_from_table
    from spos_hw.latency.profile import unit_models
    from spos_hw.latency.table import LatencyTable
    from spos_hw.latency.units import net_unit
    from spos_hw.latency.validate import fresh_archs
    from spos_hw.protocol import clock_ns, ort_session, ort_timer

    torch.set_num_threads(1)
    table = LatencyTable.load(args.lut)
    space = table.build_space()
    proto = table.protocol
    stat = np.min if proto.statistic == "min" else np.median
    clock = clock_ns(proto.clock)
    archs = fresh_archs(space, args.nets, np.random.default_rng(args.seed), set(table.calibration_archs))
    predicted = predictor_from_table(table, space).cost(space.encode(archs))
    units = [net_unit(space, a, table.batch_size) for a in archs]
    t0 = time.perf_counter()
    exported = {}
    for u in units:
        x = torch.randn(*u.input_shape, generator=torch.Generator().manual_seed(0))
        exported[u.key] = export_onnx(u.build(), (x,)).SerializeToString()
    composed = {k: m.SerializeToString() for k, m in unit_models(space, units).items() if k in exported}
    prep_s = time.perf_counter() - t0

    def timers(models: dict, iob: bool = True) -> dict:
        out = {}
        for k, m in models.items():
            s = ort_session(m, threads=int(table.runtime.get("threads") or 1))
            out[k] = ort_timer(s, clock=proto.clock) if iob else run_timer(s, clock)
        return out

    exp_t, comp_t, run_t = timers(exported), timers(composed), timers(exported, iob=False)
    regimes = {
        "alone (exported, io_binding)": lambda: alone(exp_t, 10, proto.rounds * proto.repeats, stat),
        "alone (composed, io_binding)": lambda: alone(comp_t, 10, proto.rounds * proto.repeats, stat),
        "alone (exported, session.run)": lambda: alone(run_t, 10, proto.rounds * proto.repeats, stat),
    }
    for w in sorted({0, proto.turn_warmup, 10, 50}):
        regimes[f"interleaved, turn warm-up {w} (exported)"] = lambda w=w: interleaved(
            exp_t, proto.rounds, proto.repeats, w, stat
        )
        regimes[f"interleaved, turn warm-up {w} (composed)"] = lambda w=w: interleaved(
            comp_t, proto.rounds, proto.repeats, w, stat
        )
    results: dict[str, list[np.ndarray]] = {k: [] for k in regimes}
    names = [u.key for u in units]
    for _ in range(args.passes):
        for k, fn in regimes.items():  # regimes alternate within a pass, so drift hits them alike
            got = fn()
            results[k].append(np.array([got[n] for n in names]))
    rows = []
    for k, passes in results.items():
        m = passes[0]
        err = (predicted - m) / m
        retest = float(np.mean(np.abs(passes[1] - m) / m) * 100) if len(passes) > 1 else float("nan")
        rows.append(
            [
                k,
                float(np.median(m)),
                float(np.mean(np.abs(err)) * 100),
                float(np.mean(err) * 100),
                float(np.mean(np.abs(err) <= 0.10) * 100),
                retest,
            ]
        )
    print_table(
        f"latency agreement, {space.name}, batch {table.batch_size}, {args.nets} fresh nets, "
        f"{proto.statistic} of {proto.rounds}x{proto.repeats}, {proto.clock} clock",
        ["regime", "median net (ms)", "predictor MAPE %", "bias %", "within 10 %", "re-test MAPE %"],
        rows,
        args.json,
        extra={
            "predicted median (ms)": float(np.median(predicted)),
            "table protocol": proto.to_json(),
            "preparation (s)": round(prep_s, 1),
        },
    )


if __name__ == "__main__":
    main()
