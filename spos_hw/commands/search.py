"""``spos-hw search``: evolutionary (or random) search of a trained supernet under budgets."""

from __future__ import annotations

import click

from spos_hw.commands.options import emit, json_option, main_process, progress_option, threads_option


def _budget_options(fn):
    for flag, dest, what in reversed(
        (
            ("--latency-ms", "latency", "Predicted latency budget in ms (needs --lut)."),
            ("--flops-m", "flops", "FLOPs budget in millions (multiply-accumulates, as the paper counts)."),
            ("--params-m", "params", "Parameter budget in millions."),
            ("--bitops-g", "bitops", "BitOps budget in billions (MACs x weight bits x activation bits)."),
        )
    ):
        fn = click.option(flag, dest, type=float, default=None, metavar="X", help=what)(fn)
    return click.option(
        "--lut", type=click.Path(dir_okay=False), default=None, help="Latency table from `spos-hw profile` (for --latency-ms)."
    )(fn)


def _text(r: dict) -> str:
    if r.get("arch") is None:
        return "no candidate was evaluated"
    lines = [f"best: {r['arch']}", f"held-out top-1 (supernet weights): {r['accuracy']:.4f}"]
    for key, label in (("latency_ms", "predicted latency"), ("flops", "FLOPs"), ("params", "params"), ("bitops", "BitOps")):
        if r.get(key) is not None:
            lines.append(f"{label}: {r[key]:.4f} ms" if key == "latency_ms" else f"{label}: {r[key]:,}")
    for b in r.get("budgets", []):
        scale = b.get("scale", 1.0)
        lines.append(
            f"budget {b['cost']} <= {b['limit'] / scale:g}{ {1e6: 'M', 1e9: 'G'}.get(scale, '') } {b['unit']}: {'met' if b['met'] else 'NOT met'}"
        )
    if "evaluated" in r:
        lines.append(
            f"{r['evaluated']} candidates evaluated in {r['generations']} generations ({r['strategy']}, {r['elapsed_s']:.0f} s)"
        )
    elif "candidates" in r:
        lines.append(f"picked from {r['candidates']} candidates evaluated in {r['source']} (not re-scored)")
    return "\n".join(lines)


@click.command()
@click.option(
    "--supernet", type=click.Path(dir_okay=False), default=None, help="Supernet checkpoint from `spos-hw train-supernet`."
)
@click.option("--data", default=None, help="Dataset (default: the one the supernet was trained on).")
@_budget_options
@click.option(
    "--strategy",
    type=click.Choice(["evolution", "random"]),
    default="evolution",
    show_default=True,
    help="Evolution (the paper) or random search (its baseline, same candidate count).",
)
@click.option("--population", type=int, default=None, help="Candidates per generation [50].")
@click.option("--generations", type=int, default=None, help="Evaluated generations, the initial one included [20].")
@click.option("--topk", type=int, default=None, help="Parents: the best k evaluated so far [population/5: 10].")
@click.option("--mutations", type=int, default=None, help="Mutated children per generation [population/2: 25].")
@click.option("--crossovers", type=int, default=None, help="Crossover children per generation [population/2: 25].")
@click.option("--mutation-prob", type=float, default=None, help="Per-block redraw probability of a mutation [0.1].")
@click.option(
    "--recal-images",
    type=int,
    default=None,
    help="Training images for BN recalibration [the paper's 200x128 of ImageNet, scaled to the dataset].",
)
@click.option("--holdout", type=int, default=None, help="Score on the first N held-out images [all].")
@click.option(
    "--batch-size",
    "eval_batch_size",
    type=int,
    default=500,
    show_default=True,
    help="Batch size of held-out scoring (does not change scores).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Search RNG seed (and choice of recalibration images).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@threads_option
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="search",
    show_default=True,
    help="Output folder (created if missing; its parent must exist).",
)
@click.option("--resume", is_flag=True, help="Continue the search saved in --out.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier search in --out.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Pick the best of the search in DIR for the given budgets from its history, without re-scoring.",
)
@progress_option
@json_option
def search(
    supernet,
    data,
    lut,
    latency,
    flops,
    params,
    bitops,
    strategy,
    population,
    generations,
    topk,
    mutations,
    crossovers,
    mutation_prob,
    recal_images,
    holdout,
    eval_batch_size,
    seed,
    device,
    threads,
    out,
    resume,
    overwrite,
    report_dir,
    progress,
    as_json,
) -> None:
    """Search a trained supernet for the most accurate architecture within the budgets.

    Candidates inherit the supernet's weights, get their BN statistics recalibrated on fixed
    training batches and are scored by top-1 on the held-out split; every candidate meets
    every budget before it is scored. Writes result.json, history.json, pareto.json,
    pareto_<cost>.png and state.json (for --resume) to --out. Runs distributed under torchrun.

    Example: spos-hw search --supernet supernet.pt --latency-ms 2.5 --lut lut.json --flops-m 6
    """
    from spos_hw.api import SearchConfig
    from spos_hw.api import search as run

    config = SearchConfig(
        supernet=supernet,
        budgets={"latency": latency, "flops": flops, "params": params, "bitops": bitops},
        lut=lut,
        data=data,
        strategy=strategy,
        population=population,
        generations=generations,
        topk=topk,
        mutations=mutations,
        crossovers=crossovers,
        mutation_prob=mutation_prob,
        recal_images=recal_images,
        holdout=holdout,
        eval_batch_size=eval_batch_size,
        seed=seed,
        out=out,
        resume=resume,
        overwrite=overwrite,
        device=device,
        threads=threads,
        report=report_dir,
    )
    summary = run(config, progress=progress)
    if not main_process():
        return
    if report_dir is not None:
        emit(summary, as_json, _text)
    else:
        emit(summary if as_json else {**summary, "out": out}, as_json, lambda r: _text(r) + f"\nwrote {r['out']}/result.json")


def _tau(v) -> str:
    return "n/a (a constant ranking)" if v is None else f"{v:.3f}"


def _rank_text(r: dict) -> str:
    s, ceil = r["by_accuracy"], r["noise_ceiling"]
    ci = s["tau_ci"] or [float("nan")] * 2
    lines = [
        f"{r['archs']} architectures over {r['stratify']} {r['cost_range'][0]:.4g}..{r['cost_range'][1]:.4g}, "
        f"stand-alone recipe {r['recipe']}",
        f"Kendall tau {_tau(s['tau'])} (95% CI {ci[0]:.3f}..{ci[1]:.3f}), Spearman rho {_tau(s['rho'])}, top-5 hit {s['top5_hit']:.0%} "
        f"(null sd of tau: {r['null_tau_sd']:.2f})",
        f"by held-out loss: tau {_tau(r['by_neg_loss']['tau'])}; by {r['stratify']} alone: tau {_tau(r['by_cost']['tau'])}",
        f"noise ceiling (tau between retrain seeds): {_tau(ceil['tau'])}, mean |diff| {100 * ceil['mean_abs_diff']:.2f} points"
        if ceil
        else "noise ceiling: not measured (--repeated 0)",
        f"stand-alone accuracy {100 * r['standalone']['min']:.2f}..{100 * r['standalone']['max']:.2f} %, "
        f"supernet score {100 * r['supernet_score']['min']:.2f}..{100 * r['supernet_score']['max']:.2f} %",
    ]
    return "\n".join(lines)


@click.command("rank-check")
@click.argument("supernet", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="rank-check",
    show_default=True,
    help="Folder for the plan, the retrains and the report.",
)
@click.option("--archs", type=int, default=30, show_default=True, help="Architectures, stratified by cost.")
@click.option(
    "--repeated", type=int, default=10, show_default=True, help="Of them retrained with more seeds (the noise ceiling)."
)
@click.option("--seeds", type=int, default=2, show_default=True, help="Seeds of the repeated architectures.")
@click.option("--stratify", type=click.Choice(["flops", "params", "bitops", "latency"]), default="flops", show_default=True)
@_budget_options
@click.option("--data", default=None, help="Dataset (default: the one the supernet was trained on).")
@click.option("--epochs", type=float, default=None, help="Stand-alone recipe: passes over the training data [0.5].")
@click.option("--steps", type=int, default=None, help="Stand-alone recipe: optimizer steps instead of epochs.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=None, help="Stand-alone recipe lr [the dataset's].")
@click.option("--recal-images", type=int, default=None, help="Supernet scoring: BN recalibration images [as search].")
@click.option("--holdout", type=int, default=None, help="Supernet scoring: held-out images [all].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@threads_option
@click.option("--resume", is_flag=True, help="Continue the check in --out (finished retrains are kept).")
@click.option("--overwrite", is_flag=True, help="Start the check in --out again.")
@progress_option
@json_option
def rank_check(
    supernet,
    out,
    archs,
    repeated,
    seeds,
    stratify,
    lut,
    latency,
    flops,
    params,
    bitops,
    data,
    epochs,
    steps,
    batch_size,
    lr,
    recal_images,
    holdout,
    seed,
    device,
    threads,
    resume,
    overwrite,
    progress,
    as_json,
) -> None:
    """Does the supernet rank architectures as training them alone does?

    Scores architectures spread over the cost range with the supernet (as search does) and
    stand-alone (one fixed short retrain each), and reports Kendall tau and Spearman rho with
    bootstrap 95% CIs, the top-5 hit rate and the noise ceiling between retrain seeds; writes
    rank_check.json and rank_check.png, and SUPERNET.rank.json where search finds it. Every
    retrain is a resumable unit (--resume).
    """
    from spos_hw.api import RankCheckConfig
    from spos_hw.api import rank_check as run

    config = RankCheckConfig(
        supernet=supernet,
        out=out,
        archs=archs,
        repeated=repeated,
        seeds=seeds,
        stratify=stratify,
        lut=lut,
        budgets={"latency": latency, "flops": flops, "params": params, "bitops": bitops},
        data=data,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        recal_images=recal_images,
        holdout=holdout,
        seed=seed,
        device=device,
        threads=threads,
        resume=resume,
        overwrite=overwrite,
    )
    emit(run(config, progress=progress and not as_json), as_json, _rank_text)


COMMANDS = [search, rank_check]
