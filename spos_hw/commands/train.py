"""``spos-hw train-supernet`` and ``spos-hw retrain``: parse options, call one library function.

Both run under ``torchrun --nproc_per_node=N -m spos_hw ...`` as well (DDP; rank 0 prints).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from spos_hw.commands.options import emit, json_option, main_process, space_option, threads_option
from spos_hw.nas.costs import COST_NAMES as COSTS


def _training_options(default_out: str) -> Callable:
    """Options both training commands share (defined once)."""
    opts = [
        space_option(),
        click.option(
            "--data",
            required=True,
            metavar="DATA",
            help="fashion-mnist, digits, or an ImageFolder folder (DIR/train/<class>/..., optional DIR/val/).",
        ),
        click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (default: the dataset's epochs)."),
        click.option(
            "--epochs",
            type=click.FloatRange(min=0, min_open=True),
            help="Passes over the training data (fashion-mnist default 10, digits 30, folders 120).",
        ),
        click.option(
            "--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Global batch (all ranks together)."
        ),
        click.option(
            "--accum",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Micro-batches per rank per step (gradient accumulation).",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            help="Peak learning rate, decayed linearly to 0 (default: dataset's, scaled by batch; x2 for a supernet).",
        ),
        click.option("--weight-decay", type=click.FloatRange(min=0), help="On conv/linear kernels only (default: dataset's)."),
        click.option("--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True),
        click.option(
            "--augment/--no-augment",
            default=None,
            help="The dataset's light augmentation (random crop, flip where images allow it); default: on, off for fashion-mnist.",
        ),
        click.option(
            "--out",
            default=default_out,
            show_default=True,
            help="Checkpoint path; a summary .json and a curve .png go beside it.",
        ),
        click.option("--resume", is_flag=True, help="Continue --out where it stopped (bit-identical to an uninterrupted run)."),
        click.option("--overwrite", is_flag=True, help="Replace an existing --out."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True, help="Steps between log lines."),
        click.option(
            "--ckpt-every", type=click.IntRange(min=1), default=500, show_default=True, help="Steps between checkpoints."
        ),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option(
            "--amp", type=click.Choice(["bf16", "fp16", "off"]), default="bf16", show_default=True, help="Autocast dtype on CUDA."
        ),
        threads_option,
        click.option("--workers", type=click.IntRange(min=0), help="DataLoader workers for image folders."),
        json_option,
    ]

    def wrap(fn: Callable) -> Callable:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return wrap


def _common(kw: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "data",
        "steps",
        "epochs",
        "batch_size",
        "accum",
        "lr",
        "weight_decay",
        "label_smoothing",
        "augment",
        "out",
        "resume",
        "overwrite",
        "seed",
        "log_every",
        "ckpt_every",
        "device",
        "amp",
        "threads",
        "workers",
    )
    return {k: kw[k] for k in keys} | {"space": kw["space_name"]}


def _parse_range(text: str) -> tuple[float | None, float | None]:
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (float(lo) if lo.strip() else None, float(hi) if hi.strip() else None)
    except ValueError:
        raise click.BadParameter(f"expected LO:HI (either end may be empty), got {text!r}", param_hint="--range") from None


@click.command("train-supernet")
@_training_options("supernet.pt")
@click.option(
    "--constraint",
    "constraints",
    type=click.Choice(COSTS),
    multiple=True,
    help="Cost to constrain sampled paths by; repeat with one --range each.",
)
@click.option(
    "--range",
    "ranges",
    multiple=True,
    metavar="LO:HI",
    help="Range of the matching --constraint in display units (FLOPs/params in M, BitOps in G, latency in ms).",
)
@click.option(
    "--bins", type=click.IntRange(min=1), default=7, show_default=True, help="Bins of the first constraint's range (paper: 7)."
)
@click.option(
    "--sampling",
    type=click.Choice(["auto", "exact", "rejection"]),
    default="auto",
    show_default=True,
    help="exact: DP over per-block costs; rejection: the paper's redraw loop.",
)
@click.option("--lut", help="Latency table (from `spos-hw profile`) for --constraint latency.")
@click.option(
    "--holdout",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="Training data held out for search: a fraction, or a count if >= 1.",
)
@click.option("--holdout-seed", type=int, default=0, show_default=True)
@click.option(
    "--sharing",
    type=click.Choice(["entangled", "independent"]),
    default="entangled",
    show_default=True,
    help="entangled: choices that differ only in kernel size or width share weights (first channels, "
    "centre of the kernel; BN stays per choice); independent: every choice its own (the paper).",
)
def train_supernet_cmd(constraints, ranges, bins, sampling, lut, holdout, holdout_seed, sharing, as_json, **kw) -> None:
    """Train a weight-sharing supernet, one uniformly sampled path per step.

    \b
    Example:
      spos-hw train-supernet --space shufflenetv2-small --data fashion-mnist --epochs 5 \\
          --constraint flops --range 4.5:6 --out supernet.pt
    """
    from spos_hw.api import SupernetConfig, train_supernet

    if len(constraints) != len(ranges):
        raise click.UsageError(f"give one --range per --constraint ({len(constraints)} constraints, {len(ranges)} ranges)")
    cons = tuple((c, *_parse_range(r)) for c, r in zip(constraints, ranges))
    config = SupernetConfig(
        **_common(kw),
        constraints=cons,
        bins=bins,
        sampling=sampling,
        lut=lut,
        holdout=holdout if holdout < 1 else int(holdout),
        holdout_seed=holdout_seed,
        sharing=sharing,
    )
    result = train_supernet(config, progress=not as_json)
    if main_process():
        emit(result, as_json, _supernet_text)


def _supernet_text(r: dict[str, Any]) -> str:
    s = r["sampling"]
    how = (
        "uniform"
        if s["kind"] == "uniform"
        else f"{s['method']} uniform-constrained ({', '.join(c['cost'] for c in s['constraints'])})"
    )
    return "\n".join(
        [
            f"supernet: {r['checkpoint']} (step {r['step']}/{r['steps']}{'' if r['finished'] else ', unfinished'})",
            f"space: {r['space']} ({r['fingerprint']}), sampling: {how}, weight sharing: {r['sharing']}",
            f"data: {r['data']['dataset']}, {r['data']['holdout']['train_size']} training images, "
            f"{r['data']['holdout']['size']} held out for search (seed {r['data']['holdout']['seed']})",
            f"last log window: loss {r['train_loss']}, accuracy {r['train_acc']} (sampled paths); {r['train_time_s']:.0f} s training",
            f"summary: {r['summary']}",
        ]
    )


@click.command("retrain")
@click.argument("arch")
@_training_options("model.pt")
@click.option(
    "--init",
    type=click.Choice(["scratch", "supernet"]),
    default="scratch",
    show_default=True,
    help="scratch (the paper), or fine-tune the supernet's inherited, BN-recalibrated weights (Once-for-All).",
)
@click.option("--supernet", type=click.Path(dir_okay=False), default=None, help="The supernet to inherit from (--init supernet).")
def retrain_cmd(arch: str, init: str, supernet: str | None, as_json: bool, **kw) -> None:
    """Train one architecture (BN affine) and report its test accuracy.

    ARCH is the canonical string, inline JSON, or a .json file (a search result works).
    """
    from spos_hw.api import RetrainConfig, retrain

    result = retrain(RetrainConfig(**_common(kw), arch=arch, init=init, supernet=supernet), progress=not as_json)
    if main_process():
        emit(result, as_json, _retrain_text)


def _retrain_text(r: dict[str, Any]) -> str:
    acc = "n/a (unfinished)" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
    return "\n".join(
        [
            f"model: {r['checkpoint']} (step {r['step']}/{r['steps']})",
            f"arch: {r['arch']} ({r['flops'] / 1e6:.2f}M FLOPs, {r['params'] / 1e6:.3f}M params)",
            f"test accuracy: {acc} on {r['test_images']} images ({r['test_origin']})",
            f"training: {r['train_time_s']:.0f} s, last log window loss {r['train_loss']}, accuracy {r['train_acc']}",
        ]
    )


COMMANDS = [train_supernet_cmd, retrain_cmd]
