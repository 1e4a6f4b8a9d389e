"""Pareto fronts of accuracy vs cost over evaluated candidates, and their plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.io import atomic_write_with


def pareto_front(scores: Sequence[float], costs: Sequence[float]) -> np.ndarray:
    """Indices of the non-dominated points (higher score, lower cost), by increasing cost.

    A point is on the front when every cheaper-or-equal point scores strictly lower; of
    exact ties (same cost and score) the first is kept.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(costs, dtype=np.float64)
    if s.shape != c.shape:
        raise ValueError("scores and costs must have the same length")
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.lexsort((np.arange(len(s)), -s, c))  # by cost, then best score, then first
    front, best = [], -np.inf
    for i in order:
        if s[i] > best:
            front.append(int(i))
            best = s[i]
    return np.array(front, dtype=np.int64)


def plot_front(
    path: str | Path,
    *,
    costs: Sequence[float],
    scores: Sequence[float],
    front: Sequence[int],
    chosen: int | None,
    budget: float | None,
    xlabel: str,
    scale: float = 1.0,
    title: str = "",
    origins: Sequence[str] | None = None,
) -> Path:
    """PNG of every candidate (by origin), the front, the budget line and the chosen net."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(costs, dtype=np.float64) / scale
    s = np.asarray(scores, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    groups: dict[str, list[int]] = {}
    for i, o in enumerate(origins or ["candidate"] * len(c)):
        groups.setdefault(o, []).append(i)
    for name, idx in groups.items():
        ax.scatter(c[idx], s[idx], s=10, alpha=0.45, label=f"{name} ({len(idx)})")
    f = np.asarray(front, dtype=np.int64)
    if f.size:
        ax.step(c[f], s[f], where="post", color="black", lw=1.2, label="Pareto front")
        ax.scatter(c[f], s[f], s=18, color="black", zorder=3)
    if budget is not None:
        ax.axvline(budget / scale, color="tab:red", ls="--", lw=1.2, label="budget")
    if chosen is not None:
        ax.scatter([c[chosen]], [s[chosen]], marker="*", s=220, color="gold", edgecolor="black", zorder=4, label="chosen")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out top-1 (supernet weights)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def front_entries(entries: Sequence[dict[str, Any]], cost: str) -> list[dict[str, Any]]:
    """The history entries on the accuracy-vs-``cost`` front, cheapest first."""
    idx = pareto_front([e["score"] for e in entries], [e["costs"][cost] for e in entries])
    return [entries[i] for i in idx]


__all__ = ["front_entries", "pareto_front", "plot_front"]
