"""``spos-hw demo``: the whole pipeline on the built-in default (Fashion-MNIST, shufflenetv2-small, ORT CPU)."""

from __future__ import annotations

import click

from spos_hw.commands.options import emit, json_option, progress_option, threads_option


def _text(s: dict) -> str:
    return "\n".join(
        [
            f"arch: {s['arch']}",
            f"test accuracy: {100 * s['test_accuracy']:.2f}% ({s['data']}, {s['test_images']:,} test images)",
            f"latency: budget {s['latency_budget_ms']:.4f} ms, predicted {s['latency_predicted_ms']:.4f} ms, "
            f"measured {s['latency_measured_ms']:.4f} ms ({'within' if s['latency_within_budget'] else 'OVER'} budget, batch {s['latency_batch_size']})",
            f"ONNX: max abs diff {s['onnx_max_abs_diff']:.2e}, top-1 agreement {100 * s['onnx_top1_agreement']:.2f}%",
            f"wall time: {s['wall_seconds_total']:.0f} s ("
            + ", ".join(f"{k} {v:.0f}" for k, v in s["wall_seconds"].items())
            + ")",
            f"verdict: {s['verdict']}",
        ]
    )


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    default="demo",
    show_default=True,
    help="Where every artifact goes; a rerun skips finished steps.",
)
@click.option(
    "--budget",
    type=click.Choice(["quick", "full"]),
    default="quick",
    show_default=True,
    help="quick: ~10 min on 2 CPU cores; full: hours, higher accuracy.",
)
@click.option(
    "--data",
    default="auto",
    show_default=True,
    help="auto (Fashion-MNIST if installed, else digits), fashion-mnist, digits or an ImageFolder tree.",
)
@threads_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every step.")
@progress_option
@json_option
def demo(workdir, budget, data, threads, seed, progress, as_json) -> None:
    """Profile, train, search, retrain, export, verify and measure, end to end.

    Profiles shufflenetv2-small on this CPU with ONNX Runtime, trains the supernet with
    latency-constrained sampling, searches under the 40th percentile of the space's predicted
    latency, retrains the winner from scratch, exports and verifies ONNX, and measures the
    exported net against the budget. Writes summary.json, report.md and PNGs to --workdir.
    """
    from spos_hw.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(workdir=workdir, budget=budget, data=data, threads=threads, seed=seed), progress=progress)
    emit(summary, as_json, lambda s: _text(s) + f"\nreport: {workdir}/report.md")


COMMANDS = [demo]
