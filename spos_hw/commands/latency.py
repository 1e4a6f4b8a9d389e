"""``spos-hw profile`` and ``spos-hw validate-lut``."""

from __future__ import annotations

import click

from spos_hw.commands.options import emit, json_option, space_option
from spos_hw.latency.runtimes import RUNTIMES as RUNTIME_CHOICES


def _summary_text(s: dict) -> str:
    cal = s["calibration"]
    lines = [
        f"wrote {s['out']}" if s["out"] else "table:",
        f"  space {s['space']} ({s['fingerprint']}), batch {s['batch_size']}",
        f"  {s['runtime']} {s['runtime_version']} on {s['device']} ({s['device_name']}), {s['threads']} thread(s)",
        f"  {s['entries']} block entries + stem + head, statistic {s['statistic']}, {s['clock']} clock",
    ]
    if cal.get("n"):
        lines.append(
            f"  calibration on {cal['n']} subnets: latency = {cal['slope']:.4f} x table + {cal['intercept']:.4f} ms"
            f" (in-sample MAPE {cal['in_sample_mape']:.2f}%)"
        )
    lo, hi = s["predicted_range_ms"]
    lines.append(f"  predicted latency range of the space: {lo:.4f} .. {hi:.4f} ms")
    r, noise = s["random_arch_latency"], s["noise_floor_pct"]
    lines.append(
        f"  random architectures: p5 {r['p5_ms']:.4f}, median {r['median_ms']:.4f}, p95 {r['p95_ms']:.4f} ms "
        f"(spread {r['spread_pct']:.1f} % of the median)"
    )
    if noise is not None:
        verdict = (
            "latency budgets can separate architectures"
            if s["spread_over_noise"] >= 3
            else ("WARNING: within 3x the noise, latency budgets barely separate architectures on this machine")
        )
        lines.append(
            f"  noise floor (split-half re-test of the calibration nets): {noise:.2f} % -> spread / noise "
            f"{s['spread_over_noise']:.1f}: {verdict}"
        )
    return "\n".join(lines)


@click.command()
@space_option(required=False)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--runtime", "runtime_name", type=click.Choice(RUNTIME_CHOICES), default="onnxruntime", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Intra-op threads, fixed and recorded.")
@click.option(
    "--calibrate", type=click.IntRange(min=0), default=10, show_default=True, help="Whole subnets measured to calibrate."
)
@click.option("--rounds", type=click.IntRange(min=1), default=20, show_default=True, help="Interleaved rounds.")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True, help="Timed runs per entry per round.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs per entry first.")
@click.option(
    "--statistic",
    type=click.Choice(["min", "median"]),
    default="min",
    show_default=True,
    help="Latency of an entry: min (robust to other load) or median (quiet devices).",
)
@click.option(
    "--clock",
    type=click.Choice(["auto", "wall", "thread"]),
    default="auto",
    show_default=True,
    help="thread: CPU time of the thread running the model (single-threaded CPU only; ignores other "
    "processes' load); wall: elapsed time. auto: thread for --threads 1 on cpu, else wall.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the calibration subnets.")
@click.option("--out", type=click.Path(dir_okay=False), default="lut.json", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the partial table at --out.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (or bundle folder).")
@click.option(
    "--export-bundle",
    "bundle_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Do not measure: write ONNX models + a runner (onnxruntime + numpy only) to this folder.",
)
@click.option(
    "--import-measurements",
    "measurements",
    type=click.Path(dir_okay=False),
    default=None,
    help="Turn a bundle runner's measurements file into a table at --out.",
)
@json_option
def profile(
    space_name,
    device,
    runtime_name,
    batch_size,
    threads,
    calibrate,
    rounds,
    repeats,
    warmup,
    statistic,
    clock,
    seed,
    out,
    resume,
    overwrite,
    bundle_dir,
    measurements,
    as_json,
) -> None:
    """Measure every block choice of a space on a runtime into a latency table (lut.json).

    Every distinct block signature, the stem and the head are timed, together with
    --calibrate whole subnets that fit the table-sum -> latency calibration. A killed run
    continues with --resume.
    """
    from spos_hw.api import ProfileConfig
    from spos_hw.api import profile as run

    config = ProfileConfig(
        space=space_name,
        device=device,
        runtime=runtime_name,
        batch_size=batch_size,
        threads=threads,
        calibrate=calibrate,
        rounds=rounds,
        repeats=repeats,
        warmup=warmup,
        statistic=statistic,
        clock=clock,
        seed=seed,
        out=out,
        resume=resume,
        overwrite=overwrite,
        export_bundle=bundle_dir,
        import_measurements=measurements,
    )
    result = run(config, progress=not as_json)
    emit(result, as_json, (lambda d: f"wrote bundle {d['bundle']}\n{d['next']}") if bundle_dir else _summary_text)


@click.command("validate-lut")
@click.argument("lut", type=click.Path(dir_okay=False))
@click.option("--samples", type=click.IntRange(min=2), default=50, show_default=True, help="Fresh random subnets.")
@click.option("--seed", type=int, default=1, show_default=True)
@space_option(required=False)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write a predicted-vs-measured PNG.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --plot file.")
@click.option(
    "--compose",
    is_flag=True,
    help="ONNX runtimes: chain each subnet from block graphs exported in one batch (same graph, much faster).",
)
@json_option
def validate_lut(lut, samples, seed, space_name, plot, overwrite, compose, as_json) -> None:
    """Measure fresh subnets twice with the table's runtime and protocol; report the predictor's accuracy."""
    from spos_hw.api import ValidateConfig
    from spos_hw.api import validate_lut as run

    config = ValidateConfig(
        lut=lut, samples=samples, seed=seed, space=space_name, plot=plot, overwrite=overwrite, compose=compose
    )
    report = run(config, progress=not as_json)

    def text(r):
        rows = [
            ("mape", f"{r['mape']:.2f} %"),
            ("within_5pct", f"{r['within_5pct'] * 100:.1f} %"),
            ("within_10pct", f"{r['within_10pct'] * 100:.1f} %"),
            ("max_abs_error", f"{r['max_abs_error_pct']:.2f} %"),
            ("bias", f"{r['bias_pct']:+.2f} %"),
            ("kendall_tau", f"{r['kendall_tau']:.3f}"),
            ("retest_kendall_tau", f"{r['retest_kendall_tau']:.3f}"),
            ("retest_mape", f"{r['retest_mape']:.2f} %"),
        ]
        head = (
            f"{r['space']}: {r['samples']} fresh subnets on {r['runtime']}/{r['device']} ({r['device_name']}), "
            f"statistic {r['statistic']}, {r['clock']} clock"
        )
        out = [head] + [f"  {k:20s} {v}" for k, v in rows]
        if r.get("plot"):
            out.append(f"  plot: {r['plot']}")
        return "\n".join(out)

    emit(report, as_json, text)


COMMANDS = [profile, validate_lut]
