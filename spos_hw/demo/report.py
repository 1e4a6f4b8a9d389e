"""``summary.json`` and ``report.md``: the demo's figures, the searched net beside random nets of
the same budget, and a one-line verdict on whether the search paid off here."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def verdict(nets: list[dict], key: str, n_images: int, what: str) -> dict[str, Any]:
    """Did the searched net beat the random ones on ``key``? By how much, with what uncertainty.

    The uncertainty of one accuracy on ``n_images`` images is its binomial standard error; the
    random nets' spread is their range. "Beat" means above the random nets' median by more than
    twice the standard error of the difference.
    """
    searched = next(n[key] for n in nets if n["role"] == "searched")
    randoms = np.array([n[key] for n in nets if n["role"] == "random"], dtype=np.float64)
    median = float(np.median(randoms))
    se = math.sqrt(max(searched * (1 - searched), 1e-12) / n_images + max(median * (1 - median), 1e-12) / n_images)
    delta = searched - median
    if delta > 2 * se:
        word = "beat"
    elif delta < -2 * se:
        word = "lost to"
    else:
        word = "matched"
    line = (
        f"the searched net {word} the median of {len(randoms)} random nets of the same latency budget on {what}: "
        f"{100 * searched:.2f} % vs {100 * median:.2f} % ({100 * delta:+.2f} points, +-{200 * se:.2f} at 2 standard errors "
        f"of {n_images:,} images; random nets {100 * randoms.min():.2f}..{100 * randoms.max():.2f} %, best {100 * randoms.max():.2f} %)"
    )
    return {
        "on": what,
        "outcome": word,
        "searched": searched,
        "random_median": median,
        "random_best": float(randoms.max()),
        "delta": delta,
        "two_se": 2 * se,
        "n_random": len(randoms),
        "line": line,
    }


def summarize(demo, search: dict, elapsed: float) -> dict:
    s = demo.state["steps"]
    prof, retrain, export = s["profile"]["result"], s["retrain"]["result"], s["export"]["result"]
    measure, comp = s["measure"]["result"], s["compare"]["result"]
    budget = search["latency_budget_ms"]
    nets = [dict(n, latency_measured_ms=measure["compared_measured_ms"].get(n["arch"])) for n in comp["nets"]]
    verdicts = [verdict(nets, "supernet_accuracy", comp["holdout_images"], "held-out accuracy with supernet weights")]
    if comp.get("compare_epochs"):
        verdicts.append(
            verdict(
                nets,
                "standalone_accuracy",
                retrain["test_images"],
                f"test accuracy after the same {comp['compare_epochs']:g}-epoch retrain",
            )
        )
    v = measure["validation"]
    chosen = next(t for t in prof["tried"] if t["batch"] == prof["batch_size"])
    return {
        "kind": "spos-hw-demo-summary",
        "budget": demo.budget,
        "data": demo.data if isinstance(demo.data, str) else demo.config["data"],
        "space": demo.space,
        "arch": search["arch"],
        "test_accuracy": retrain["test_accuracy"],
        "test_images": retrain["test_images"],
        "retrain": {"init": retrain["init"], "epochs": demo.preset.retrain_epochs, "steps": retrain["steps"]},
        "holdout_accuracy_supernet": search["holdout_accuracy"],
        "candidate_scores": search["score_distribution"],
        "latency_budget_ms": budget,
        "latency_budget_percentile": demo.preset.percentile,
        "latency_batch_size": prof["batch_size"],
        "latency_budget_binds": prof["budget_binds"],
        "latency_spread": {
            "random_arch_p5_p95_pct": chosen["spread_pct"],
            "noise_floor_pct": chosen["noise_pct"],
            "spread_over_noise": chosen["spread_over_noise"],
            "tried": prof["tried"],
            "validation_retest_pct": v["retest_mape"],
            "validation_measured_p5_p95_pct": v["measured_p5_p95_pct"],
        },
        "latency_predicted_ms": measure["latency_predicted_ms"],
        "latency_measured_ms": measure["latency_measured_ms"],
        "latency_within_budget": bool(measure["latency_measured_ms"] <= budget * 1.03),
        "latency_protocol": {
            "runtime": "onnxruntime",
            "device": "cpu",
            "threads": 1,
            "batch_size": prof["batch_size"],
            "statistic": measure["statistic"],
            "clock": measure["clock"],
        },
        "predictor_validation": v,
        "searched_vs_random": nets,
        "verdicts": verdicts,
        "verdict": verdicts[-1]["line"],
        "flops": retrain["flops"],
        "params": retrain["params"],
        "onnx_max_abs_diff": export["max_abs_diff"],
        "onnx_top1_agreement": export["top1_agreement"],
        "onnx_verified_on": export["inputs"],
        "candidates_evaluated": search["evaluated"],
        "wall_seconds": {k: v["wall_seconds"] for k, v in s.items()},
        "wall_seconds_total": round(sum(v["wall_seconds"] for v in s.values()), 1),
        "wall_seconds_this_run": round(elapsed, 1),
        "artifacts": {
            "latency_table": "lut.json",
            "supernet": "supernet.pt",
            "search": "search/",
            "compare": "compare.json",
            "model": "model.pt",
            "onnx": "model.onnx",
            "latency": "latency.json",
            "plots": sorted(str(p.relative_to(demo.dir)) for p in demo.dir.glob("**/*.png") if p.parent.name != "compare"),
        },
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def report_markdown(s: dict) -> str:
    """``report.md``: the figures of ``summary.json`` for a person, with the plots inline."""
    ok = "met" if s["latency_within_budget"] else "NOT met"
    v, sp = s["predictor_validation"], s["latency_spread"]
    r = s["retrain"]
    how = "fine-tuned from the supernet's weights" if r["init"] == "supernet" else "retrained from scratch"
    binds = (
        f"{sp['spread_over_noise']:.1f}x the noise: the budget binds"
        if s["latency_budget_binds"]
        else f"only {sp['spread_over_noise'] or 0:.1f}x the noise at every batch size tried: the budget barely separates architectures here"
    )
    lines = [
        f"# spos-hw demo ({s['budget']} budget, {s['data']}, {s['space']})",
        "",
        f"Chosen architecture: `{s['arch']}`",
        "",
        f"**Verdict:** {s['verdict']}.",
        *[f"- {x['line']}." for x in s["verdicts"][:-1]],
        "",
        "| figure | value |",
        "|---|---|",
        f"| test accuracy ({how}, {r['epochs']:g} epochs) | {100 * s['test_accuracy']:.2f} % on {s['test_images']:,} images |",
        f"| held-out accuracy with supernet weights | {100 * s['holdout_accuracy_supernet']:.2f} % (candidates: median "
        f"{100 * s['candidate_scores']['median']:.2f} %, {100 * s['candidate_scores']['min']:.2f}..{100 * s['candidate_scores']['max']:.2f} %) |",
        f"| latency budget ({s['latency_budget_percentile']:g}th percentile of the space's predicted latency, batch {s['latency_batch_size']}) | {s['latency_budget_ms']:.4f} ms |",
        f"| random architectures' latency spread (p5-p95) vs the noise floor | {sp['random_arch_p5_p95_pct']:.1f} % vs {sp['noise_floor_pct'] or 0:.2f} %: {binds} |",
        f"| predicted latency | {s['latency_predicted_ms']:.4f} ms |",
        f"| measured latency of model.onnx (ORT CPU, 1 thread, {s['latency_protocol']['statistic']}, {s['latency_protocol']['clock']} clock) | {s['latency_measured_ms']:.4f} ms ({ok}: <= budget + 3%) |",
        f"| predictor on {v['samples']} subnets (compared + fresh) | MAPE {v['mape']:.2f} % (re-test noise {v['retest_mape']:.2f} %), "
        f"{100 * v['within_5pct']:.0f} % within 5 %, Kendall tau {v['kendall_tau']:.3f} (re-test {v['retest_kendall_tau']:.3f}) |",
        f"| FLOPs / params | {s['flops'] / 1e6:.2f} M / {s['params'] / 1e6:.3f} M |",
        f"| ONNX vs torch | max abs diff {s['onnx_max_abs_diff']:.2e}, top-1 agreement {100 * s['onnx_top1_agreement']:.2f} % ({s['onnx_verified_on']}) |",
        f"| candidates scored | {s['candidates_evaluated']} |",
        *[f"| warning | {w} |" for w in v.get("warnings", [])],
        "",
        "Searched net beside random nets of the same latency budget:",
        "",
        "| net | arch | predicted ms | measured ms | supernet held-out | stand-alone |",
        "|---|---|---|---|---|---|",
        *[
            f"| {n['role']} | `{n['arch']}` | {n['latency_predicted_ms']:.4f} | "
            + ("n/a" if n["latency_measured_ms"] is None else f"{n['latency_measured_ms']:.4f}")
            + f" | {_pct(n['supernet_accuracy'])} | {_pct(n.get('standalone_accuracy'))} |"
            for n in s["searched_vs_random"]
        ],
        "",
        "| step | wall seconds |",
        "|---|---|",
        *[f"| {k} | {sec:.1f} |" for k, sec in s["wall_seconds"].items()],
        f"| total | {s['wall_seconds_total']:.1f} |",
        "",
        *[f"![{p}]({p})" for p in s["artifacts"]["plots"]],
        "",
    ]
    return "\n".join(lines)


__all__ = ["report_markdown", "summarize", "verdict"]
