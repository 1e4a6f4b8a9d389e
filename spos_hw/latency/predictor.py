"""The compiled latency predictor: a table and its calibration as dense arrays for a space.

The result is an ``AdditiveCost`` named ``latency`` in ms: ``cost(batch)`` prices an
``ArchBatch`` with one gather and one sum (millions of architectures per second on one core),
and its ``per_block`` table serves exact uniform-in-bin sampling. Torch-free.
"""

from __future__ import annotations

import os

import numpy as np

from spos_hw.errors import ArtifactError
from spos_hw.latency.table import LatencyTable, load_table
from spos_hw.latency.units import HEAD, STEM
from spos_hw.nas.space import AdditiveCost, SearchSpace


def table_cost(table: LatencyTable, space: SearchSpace) -> AdditiveCost:
    """The uncalibrated sum: stem + head + one table entry per block (``latency-table``, ms)."""
    table.check(space)
    missing = [k for k in (STEM, HEAD) if k not in table.fixed]
    if missing:
        raise ArtifactError(f"latency table has no {' or '.join(missing)} entry; rerun spos-hw profile")
    nop, nch, nw, na = space.sizes
    mask = space.choice_mask()
    dense = np.full((space.num_blocks, nop, nch, nw, na), np.nan, dtype=np.float64)
    for pos in space.positions:
        for idx in np.ndindex(nop, nch, nw, na):
            if not mask[(pos.index, *idx)]:
                continue  # not a choice of this block: no entry, never priced
            key = space.signature(pos, idx)
            stats = table.entries.get(key)
            if stats is None:
                raise ArtifactError(
                    f"latency table has no entry for block {pos.index} choice {idx} ({key}); rerun spos-hw profile"
                )
            dense[(pos.index, *idx)] = table.latency(stats)
    fixed = table.latency(table.fixed[STEM]) + table.latency(table.fixed[HEAD])
    return AdditiveCost("latency-table", "ms", fixed, dense, 1.0, mask if space.masked else None)


def predictor_from_table(table: LatencyTable, space: SearchSpace, *, calibrated: bool = True) -> AdditiveCost:
    """The latency cost model (ms) of ``table`` for ``space``; calibrated unless asked otherwise."""
    raw = table_cost(table, space)
    cal = table.calibration
    if not calibrated or not cal:
        return AdditiveCost("latency", "ms", raw.fixed, raw.table, 1.0, raw.mask)
    return raw.affine(float(cal["slope"]), float(cal["intercept"]), name="latency")


def load_predictor(
    path: str | os.PathLike, space: SearchSpace, *, batch_size: int | None = None, calibrated: bool = True
) -> AdditiveCost:
    """Load ``path`` (refused when made for another space / input size / batch size) and compile it.

    Example:
        >>> cost = load_predictor("lut.json", space)          # doctest: +SKIP
        >>> cost.cost(space.sample(np.random.default_rng(0), 1_000_000))  # ms, one call
    """
    return predictor_from_table(load_table(path, space, batch_size=batch_size), space, calibrated=calibrated)


def latency_spread(predictor: AdditiveCost, space: SearchSpace, *, samples: int = 100_000, seed: int = 0) -> dict:
    """Predicted latency of uniformly random architectures: p5, median, p95 (ms) and the p5-p95 spread (%)."""
    lat = predictor.cost(space.sample(np.random.default_rng(seed), samples))
    p5, p50, p95 = (float(v) for v in np.percentile(lat, [5, 50, 95]))
    return {"p5_ms": p5, "median_ms": p50, "p95_ms": p95, "spread_pct": (p95 - p5) / p50 * 100}


def describe_table(table: LatencyTable, out: str | os.PathLike | None = None) -> dict:
    """What ``spos-hw profile`` and ``info --lut`` report about a table (JSON-able).

    Beside the predicted range: the p5-p95 spread of random architectures and the noise floor
    measured while profiling; a spread within a few times the noise cannot rank by latency here.
    """
    space = table.build_space()
    predictor = predictor_from_table(table, space)
    lo, hi = predictor.bounds()
    cal = table.calibration or {}
    spread = latency_spread(predictor, space)
    noise = cal.get("split_half_retest_pct")
    return {
        "out": str(out) if out else None,
        "space": table.space_name,
        "fingerprint": table.space["fingerprint"],
        "runtime": table.runtime.get("name"),
        "runtime_version": table.runtime.get("version"),
        "device": table.runtime.get("device"),
        "device_name": table.runtime.get("device_name"),
        "threads": table.runtime.get("threads"),
        "batch_size": table.batch_size,
        "statistic": table.protocol.statistic,
        "clock": table.protocol.clock,
        "entries": len(table.entries),
        "calibration": {k: cal.get(k) for k in ("n", "slope", "intercept", "in_sample_mape", "fitted_with")},
        "predicted_range_ms": [lo, hi],
        "random_arch_latency": spread,
        "noise_floor_pct": noise,
        "spread_over_noise": None if not noise else spread["spread_pct"] / noise,
        "source": table.source,
    }


__all__ = ["describe_table", "latency_spread", "load_predictor", "predictor_from_table", "table_cost"]
