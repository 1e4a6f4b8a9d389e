"""``validate_table``: how well a table predicts fresh whole subnets, and the noise ceiling.

N fresh random subnets (never the calibration ones) are exported on their own (the real
``SubNet`` export) and measured end to end with the table's runtime, device, threads and
protocol, twice (two full interleaved passes). The report compares the predictions with the
first pass (``mape``, ``within_5pct``, ``within_10pct``, ``kendall_tau``) and the two passes
with each other (``retest_mape``, ``retest_kendall_tau``: what a perfect predictor could reach
on this machine at this moment).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from spos_hw.errors import ArtifactMismatch, Infeasible, SposHwError
from spos_hw.latency.predictor import predictor_from_table
from spos_hw.latency.profile import prepare_timers, run_protocol
from spos_hw.latency.runtimes import Runtime, get_runtime
from spos_hw.latency.table import LatencyTable
from spos_hw.latency.units import net_unit
from spos_hw.nas.space import Arch, SearchSpace
from spos_hw.protocol import flatten, summarize

log = logging.getLogger(__name__)


def fresh_archs(space: SearchSpace, n: int, rng: np.random.Generator, exclude: set[str]) -> list[Arch]:
    """``n`` distinct uniformly random architectures not in ``exclude`` (bounded tries)."""
    out: dict[str, Arch] = {}
    for _ in range(50):
        for arch in space.decode(space.sample(rng, max(2 * n, 16))):
            key = str(arch)
            if key not in exclude and key not in out:
                out[key] = arch
                if len(out) == n:
                    return list(out.values())
    raise Infeasible(f"space {space.name!r} has fewer than {n} architectures outside the calibration set")


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if len(a) < 2:
        return float("nan")
    return float(kendalltau(a, b).statistic)


def metrics(predicted: np.ndarray, measured: np.ndarray, remeasured: np.ndarray) -> dict:
    """The accuracy figures of a validation run (errors relative to the first measurement)."""
    err = (predicted - measured) / measured
    retest = (remeasured - measured) / measured
    tau, retest_tau = _kendall(predicted, measured), _kendall(measured, remeasured)
    return {
        "mape": float(np.mean(np.abs(err)) * 100),
        "within_5pct": float(np.mean(np.abs(err) <= 0.05)),
        "within_10pct": float(np.mean(np.abs(err) <= 0.10)),
        "max_abs_error_pct": float(np.max(np.abs(err)) * 100),
        "bias_pct": float(np.mean(err) * 100),
        "kendall_tau": tau,
        "retest_kendall_tau": retest_tau,
        "tau_ratio": float(tau / retest_tau) if retest_tau and retest_tau > 0 else float("nan"),
        "retest_mape": float(np.mean(np.abs(retest)) * 100),
        "measured_spread_pct": float(np.std(measured) / np.mean(measured) * 100),
        "measured_p5_p95_pct": float(np.ptp(np.percentile(measured, [5, 95])) / np.median(measured) * 100),
    }


def check_same_device(table: LatencyTable, runtime: Runtime) -> None:
    """Refuse to validate a table made on another device: the numbers would not be comparable."""
    here = runtime.device_name()
    there = table.runtime.get("device_name")
    if there and here != there:
        raise ArtifactMismatch(f"latency table was measured on {there!r}; this machine's {runtime.device} is {here!r}")


def validate_table(
    table: LatencyTable | str | os.PathLike,
    *,
    samples: int = 50,
    seed: int = 1,
    space: SearchSpace | None = None,
    runtime: Runtime | None = None,
    plot: str | os.PathLike | None = None,
    compose: bool = False,
    progress: bool = False,
    extra_archs: Sequence[Arch] = (),
) -> dict:
    """Measure ``samples`` fresh subnets twice and report the predictor's accuracy (see module doc).

    With ``compose`` (ONNX runtimes only) each subnet's graph is chained from block graphs
    exported in one batch instead of exported on its own: the same ops and weights layout
    (tests check it op by op and numerically), minutes faster for large ``samples``.
    ``extra_archs`` are measured with them, first (the demo's searched and random nets).
    """
    from tqdm.auto import tqdm

    if not isinstance(samples, int) or samples < 2:
        raise SposHwError(f"samples must be an integer >= 2, got {samples!r}")
    path = None
    if not isinstance(table, LatencyTable):
        path = str(table)
        table = LatencyTable.load(table)
    if space is None:
        space = table.build_space()
    table.check(space, what="latency table")
    predictor = predictor_from_table(table, space)
    extra = [space.arch(a) for a in extra_archs]
    fresh = fresh_archs(space, samples, np.random.default_rng(seed), set(table.calibration_archs) | {str(a) for a in extra})
    archs = list(dict.fromkeys([*extra, *fresh]))
    rt = runtime or get_runtime(
        table.runtime["name"], table.runtime["device"], threads=int(table.runtime["threads"]), clock=table.protocol.clock
    )
    with rt:
        check_same_device(table, rt)
        units = [net_unit(space, a, table.batch_size) for a in archs]
        if compose:
            if not rt.uses_onnx:
                raise SposHwError(f"--compose needs an ONNX runtime; the table's runtime is {rt.name}")
            timers = prepare_timers(rt, space, units, progress=progress)
        else:
            timers = {
                u.key: rt.timer(u.build(), u.input_shape)
                for u in tqdm(units, desc="export", unit="net", disable=not progress, leave=False)
            }
        passes = [run_protocol(timers, table.protocol, progress=progress, desc=f"measure {i + 1}/2") for i in range(2)]
    stat = table.protocol.statistic
    measured, remeasured = (np.array([summarize(flatten(p[u.key]))[stat] for u in units]) for p in passes)
    predicted = predictor.cost(space.encode(archs))
    report = {
        "table": path,
        "space": space.name,
        "runtime": table.runtime.get("name"),
        "device": table.runtime.get("device"),
        "device_name": table.runtime.get("device_name"),
        "threads": table.runtime.get("threads"),
        "batch_size": table.batch_size,
        "statistic": stat,
        "clock": table.protocol.clock,
        "samples": len(archs),
        "seed": seed,
        "subnet_onnx": ("composed from block exports" if compose else "exported one by one") if rt.uses_onnx else None,
        **metrics(predicted, measured, remeasured),
        "archs": [
            {"arch": str(a), "predicted_ms": float(p), "measured_ms": float(m), "remeasured_ms": float(r)}
            for a, p, m, r in zip(archs, predicted, measured, remeasured)
        ],
    }
    report["warnings"] = noise_warnings(report)
    for w in report["warnings"]:
        log.warning("%s", w)
    if plot is not None:
        save_plot(report, plot)
        report["plot"] = str(plot)
    return report


def noise_warnings(r: dict, *, too_noisy_pct: float = 10.0) -> list[str]:
    """One-line warnings when the figures are limited by the machine's noise, not by the predictor.

    The re-test figures (two passes over the same nets) are what a perfect predictor could reach here.
    """
    out = []
    retest, mape, spread = r["retest_mape"], r["mape"], r["measured_p5_p95_pct"]
    if retest > too_noisy_pct:
        out.append(
            f"this machine is too noisy to validate: two passes over the same nets differ by {retest:.1f} % "
            f"(re-test MAPE), so MAPE {mape:.1f} % measures the noise, not the predictor"
        )
    elif mape <= 1.25 * retest:
        out.append(
            f"the predictor's error (MAPE {mape:.2f} %) is at this machine's noise floor (re-test MAPE {retest:.2f} %): "
            "no predictor can be shown to do better here"
        )
    if spread < 3 * retest:
        out.append(
            f"the nets' latencies spread only {spread:.1f} % (p5-p95), within 3x the noise ({retest:.2f} %): "
            "latency cannot rank them on this machine at this batch size"
        )
    return out


def save_plot(report: dict, path: str | os.PathLike) -> None:
    """Predicted vs measured scatter with the y = x line and a +-5% band (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spos_hw.io import atomic_write_with

    m = np.array([r["measured_ms"] for r in report["archs"]])
    p = np.array([r["predicted_ms"] for r in report["archs"]])
    lo, hi = float(min(m.min(), p.min())) * 0.97, float(max(m.max(), p.max())) * 1.03
    line = np.linspace(lo, hi, 2)
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.fill_between(line, line * 0.95, line * 1.05, color="tab:green", alpha=0.15, label="+-5%")
    ax.plot(line, line, color="tab:green", lw=1, label="y = x")
    ax.scatter(m, p, s=14, color="tab:blue", label=f"{len(m)} fresh subnets")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"measured latency (ms, {report['statistic']}, {report['clock']} clock)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(
        f"{report['space']} on {report['runtime']}/{report['device']}\n"
        f"MAPE {report['mape']:.2f}%, tau {report['kendall_tau']:.3f} (re-test {report['retest_kendall_tau']:.3f})",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


__all__ = ["fresh_archs", "metrics", "noise_warnings", "save_plot", "validate_table"]
