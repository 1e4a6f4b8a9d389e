"""What a search writes and reads back: history entries with every cost, the best candidate
under budgets, ``result.json``, ``history.json``, ``pareto.json``, ``pareto_<cost>.png``, and
re-picking from a finished search under other budgets (``report_search``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.errors import ArtifactError, Infeasible
from spos_hw.io import atomic_write_json, read_json
from spos_hw.nas.costs import BUDGET_FLAGS, Bound, admits_all, budgets_from, builtin_costs, display, scale_of
from spos_hw.nas.pareto import pareto_front, plot_front
from spos_hw.nas.space import CostModel, SearchSpace

FORMAT = 1


@dataclass
class SearchResult:
    """A finished search: the chosen candidate, every evaluated one, and ``result.json``'s contents."""

    best: dict[str, Any] | None
    entries: list[dict[str, Any]]
    generations: int
    evaluated: int
    elapsed_s: float
    summary: dict[str, Any]


def cost_table(space: SearchSpace, costs: Mapping[str, CostModel], archs: Sequence[str]) -> dict[str, np.ndarray]:
    """Every cost of every architecture (canonical strings), vectorized per model."""
    batch = space.encode(space.arch(a) for a in archs)
    return {name: np.asarray(model.cost(batch), dtype=np.float64).reshape(-1) for name, model in costs.items()}


def _value(name: str, v: float) -> float | int:
    return float(v) if name == "latency" else int(round(v))


def history_entries(space: SearchSpace, history: Sequence[dict], costs: Mapping[str, CostModel]) -> list[dict[str, Any]]:
    """History rows with the arch's JSON and its costs under every model in ``costs``."""
    table = cost_table(space, costs, [h["arch"] for h in history])
    out = []
    for i, h in enumerate(history):
        arch = space.arch(h["arch"])
        out.append(
            {
                "arch": h["arch"],
                "arch_json": arch.to_json(),
                "score": h["score"],
                "generation": h["generation"],
                "origin": h["origin"],
                "costs": {name: _value(name, table[name][i]) for name in costs},
            }
        )
    return out


def pick_best(space: SearchSpace, entries: Sequence[dict], budgets: Sequence[Bound]) -> int | None:
    """Index of the best-scoring entry that meets every budget; None if none does.

    Ties in score go to the cheaper candidate (sum of costs relative to their budgets, so the
    chosen net lies on the Pareto fronts), then to the earlier one.
    """
    if not entries:
        return None
    batch = space.encode(space.arch(e["arch"]) for e in entries)
    ok = admits_all(budgets, batch)
    if not ok.any():
        return None
    scores = np.array([e["score"] for e in entries], dtype=np.float64)
    scores = np.where(np.isnan(scores) | ~ok, -np.inf, scores)
    relative = sum(np.asarray(b.model.cost(batch), dtype=np.float64) / b.limit for b in budgets)
    order = np.lexsort((np.arange(len(entries)), relative, -scores))
    return int(order[0])


def _header(space: SearchSpace, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "space_name": space.name,
        "fingerprint": space.fingerprint,
        "space": space.to_json(),
        **{k: v for k, v in meta.items() if k != "config"},
        "config": meta.get("config", {}),
    }


def write_history(out_dir: Path, space: SearchSpace, entries: list[dict], generation: int, meta: Mapping[str, Any]) -> None:
    atomic_write_json(
        out_dir / "history.json",
        {"kind": "search-history", "format": FORMAT, **_header(space, meta), "generation": generation, "entries": entries},
    )


def describe_arch(space: SearchSpace, entry: Mapping[str, Any], budgets: Sequence[Bound]) -> dict[str, Any]:
    """What ``result.json`` says about one candidate: arch, accuracy, every cost, the budgets met."""
    out: dict[str, Any] = {"arch": entry["arch"], "arch_json": entry["arch_json"], "accuracy": entry["score"]}
    for name, v in entry["costs"].items():
        out[BUDGET_FLAGS.get(name, (None, name))[1]] = v
    out["budgets"] = [
        {**b.to_json(), "value": entry["costs"].get(b.name), "met": bool(entry["costs"].get(b.name, math.inf) <= b.limit)}
        for b in budgets
    ]
    out["generation"], out["origin"] = entry["generation"], entry["origin"]
    return out


def finish(strategy, costs, meta, out_dir: Path | None, elapsed: float, plots: bool):
    space, budgets = strategy.space, strategy.budgets
    entries = history_entries(space, strategy.history, costs)
    best_i = pick_best(space, entries, budgets)
    best = describe_arch(space, entries[best_i], budgets) if best_i is not None else None
    summary = {
        "kind": "search-result",
        "format": FORMAT,
        **({"best": None} if best is None else best),
        **_header(space, meta),
        "strategy": strategy.name,
        "evaluated": len(entries),
        "generations": strategy.generation,
        "elapsed_s": round(elapsed, 3),
        "score_distribution": score_distribution([e["score"] for e in entries]),
    }
    fronts = {
        b.name: [entries[i] for i in pareto_front([e["score"] for e in entries], [e["costs"][b.name] for e in entries])]
        for b in budgets
    }
    if out_dir is not None:
        write_history(out_dir, space, entries, strategy.generation, meta)
        atomic_write_json(
            out_dir / "pareto.json", {"kind": "search-pareto", "format": FORMAT, "space_name": space.name, "fronts": fronts}
        )
        if plots and entries:
            title = f"{space.name}: {strategy.name} search, {len(entries)} candidates" + trust_note(meta.get("rank_check"))
            for b in budgets:
                _plot(out_dir / f"pareto_{b.name}.png", entries, b, best_i, title)
        atomic_write_json(out_dir / "result.json", summary)
    return SearchResult(best, entries, strategy.generation, len(entries), elapsed, summary)


def score_distribution(scores: Sequence[float]) -> dict[str, Any] | None:
    """How the candidates' scores spread: a search whose scores sit at chance level picked at random."""
    s = np.asarray([v for v in scores if v == v], dtype=np.float64)
    if not s.size:
        return None
    q = np.percentile(s, [0, 10, 25, 50, 75, 90, 100])
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "std": float(s.std()),
        **dict(zip(("min", "p10", "p25", "median", "p75", "p90", "max"), map(float, q))),
    }


def trust_note(rank: Mapping[str, Any] | None) -> str:
    """The plot's line on how far the supernet's ranking is to be trusted (from a rank check)."""
    if not rank:
        return "\nno rank check of this supernet: how well it ranks is unmeasured (spos-hw rank-check)"
    if rank.get("tau") is None:
        return f"\nrank check (n={rank['n']}): the stand-alone accuracies were all equal, no ranking to compare"
    ci = rank.get("tau_ci") or [float("nan")] * 2
    return f"\nrank check: Kendall tau {rank['tau']:.2f} (95% CI {ci[0]:.2f}..{ci[1]:.2f}, n={rank['n']}) vs stand-alone accuracy"


def _plot(path: Path, entries: Sequence[dict], budget: Bound, chosen: int | None, title: str) -> None:
    costs = [e["costs"][budget.name] for e in entries]
    scores = [e["score"] for e in entries]
    scale = scale_of(budget.model)
    unit = display(budget.model, scale).split(" ", 1)[-1] if scale != 1.0 else getattr(budget.model, "unit", "")
    suffix = {1e3: "k", 1e6: "M", 1e9: "G"}.get(scale, "")
    plot_front(
        path,
        costs=costs,
        scores=scores,
        front=pareto_front(scores, costs),
        chosen=chosen,
        budget=budget.limit,
        xlabel=f"{budget.name} ({suffix}{unit})",
        scale=scale,
        title=title,
        origins=[e["origin"] for e in entries],
    )


def report_search(
    out: str | Path,
    budgets: Mapping[str, float | None],
    *,
    cost_models: Callable[[SearchSpace], Mapping[str, CostModel]] = builtin_costs,
) -> dict[str, Any]:
    """The best evaluated candidate of a finished (or running) search under other budgets; nothing is re-scored.

    Costs are recomputed from each architecture with ``cost_models(space)``, so any budget kind
    works whose model is available (latency with a table). Only candidates the search evaluated
    can be picked: they met the search's own budgets.
    """
    from spos_hw.nas.spaces import space_from_record

    path = Path(out) / "history.json"
    hist = read_json(path, "search history")
    if not isinstance(hist, dict) or hist.get("kind") != "search-history":
        raise ArtifactError(f"{str(path)!r} is not a spos-hw search history")
    space = space_from_record(hist.get("space"), hist.get("fingerprint"), repr(str(path)))
    costs = cost_models(space)
    blist = budgets_from(costs, budgets)
    raw = hist.get("entries") or []
    entries = history_entries(space, raw, costs)
    best = pick_best(space, entries, blist)
    if best is None:
        cheapest = (
            ", ".join(f"{b.name} {display(b.model, min(e['costs'][b.name] for e in entries))}" for b in blist)
            if entries
            else "none"
        )
        raise Infeasible(
            f"none of the {len(entries)} candidates evaluated in {str(out)!r} meets {' and '.join(b.describe() for b in blist)} "
            f"(cheapest evaluated: {cheapest}); run a search with these budgets"
        )
    return {
        "kind": "search-report",
        **describe_arch(space, entries[best], blist),
        "space_name": space.name,
        "fingerprint": space.fingerprint,
        "source": str(out),
        "candidates": len(entries),
        "search_budgets": hist.get("config", {}).get("budgets"),
    }


__all__ = [
    "FORMAT",
    "SearchResult",
    "cost_table",
    "describe_arch",
    "finish",
    "history_entries",
    "pick_best",
    "report_search",
    "score_distribution",
    "trust_note",
    "write_history",
]
