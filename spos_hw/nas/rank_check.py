"""``rank_check(config)``: does the supernet rank architectures as training them alone does?

The one measurement that says whether a search can beat a random pick. Architectures spread
over the cost range are scored twice: by the supernet (inherited weights, BN recalibrated, the
search's own scorer) and stand-alone (retrained from scratch with one fixed short recipe, top-1
on the test split). Kendall tau and Spearman rho between the two, with percentile-bootstrap
95% CIs over architectures, say how well the supernet ranks; the same statistics between two
retrain seeds of the same architectures are the noise ceiling no supernet can beat.

The folder ``out`` holds the plan (``plan.json``: the architectures, fixed once retrains start),
the supernet scores (``scores.json``, one entry per supernet fingerprint), one checkpointed
retrain per unit (``retrain/NN-sS.pt``, resumed after a kill) and the ledger of finished ones
(``retrains.json``), then ``rank_check.json`` and ``rank_check.png``. The stand-alone figures do
not depend on the supernet, so a second supernet checked in the same folder retrains nothing.
The summary is also written beside the supernet as ``<supernet>.rank.json``, where search finds it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.errors import ArtifactMismatch, OutputError
from spos_hw.io import atomic_write_json, atomic_write_with, check_new_output, file_sha256, read_json
from spos_hw.nas.config import RankCheckConfig, RetrainConfig
from spos_hw.nas.costs import admits_all, budgets_from, builtin_costs, check_budgets, pick_cost
from spos_hw.nas.space import CostModel, SearchSpace

log = logging.getLogger(__name__)

FORMAT = 1
SUMMARY, PLOT, PLAN, SCORES, RETRAINS = "rank_check.json", "rank_check.png", "plan.json", "scores.json", "retrains.json"
CostModels = Callable[[SearchSpace], Mapping[str, CostModel]]


# ----------------------------------------------------------------------------- statistics


def _tau(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def rank_agreement(pred, truth, *, resamples: int = 2000, seed: int = 0, top: int = 5) -> dict[str, Any]:
    """Kendall tau-b and Spearman rho of ``pred`` against ``truth``, percentile-bootstrap 95% CIs
    (architectures resampled with replacement), and the top-``top`` hit rate."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    rng = np.random.default_rng(seed)
    taus, rhos = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(pred), len(pred))
        if np.ptp(pred[idx]) > 0 and np.ptp(truth[idx]) > 0:
            taus.append(_tau(pred[idx], truth[idx]))
            rhos.append(_rho(pred[idx], truth[idx]))
    k = min(top, len(pred))
    hit = len(set(np.argsort(-pred, kind="stable")[:k]) & set(np.argsort(-truth, kind="stable")[:k])) / k

    def ci(v: list[float]) -> list[float] | None:
        return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None

    defined = np.ptp(pred) > 0 and np.ptp(truth) > 0  # a constant ranking has no correlation
    tau, rho = (_tau(pred, truth), _rho(pred, truth)) if defined else (None, None)
    return {"n": int(len(pred)), "tau": tau, "tau_ci": ci(taus), "rho": rho, "rho_ci": ci(rhos), f"top{top}_hit": hit}


def null_tau_sd(n: int) -> float:
    """Standard deviation of Kendall tau between independent rankings of ``n`` items."""
    return float(np.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))))


# ----------------------------------------------------------------------------- bookkeeping


class Ledger:
    """A JSON dict on disk, rewritten atomically at every ``put``: finished units survive a kill."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[str, Any] = read_json(path, "rank-check ledger") if path.is_file() else {}

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def __getitem__(self, key: str) -> Any:
        return self.items[key]

    def put(self, key: str, value: Any) -> None:
        self.items[key] = value
        atomic_write_json(self.path, self.items)


def _check_out(cfg: RankCheckConfig) -> Path:
    """Refuse a file, or an earlier check not resumed or overwritten, before any work (nothing created yet)."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} exists and is not a folder")
    if (out / PLAN).exists():
        check_new_output(out / PLAN, overwrite=cfg.overwrite, resume=cfg.resume)
    elif not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise OutputError(f"output folder {str(out.parent)!r} does not exist")
    return out


def _prepare(cfg: RankCheckConfig, out: Path) -> None:
    """Create the folder (or clear an earlier check for ``overwrite``) once the inputs are known good."""
    if cfg.overwrite and (out / PLAN).exists():
        for name in (PLAN, SCORES, RETRAINS, SUMMARY, PLOT, "space.json"):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "retrain", ignore_errors=True)
    try:
        (out / "retrain").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {str(out)!r}: {exc.strerror}") from None
    check_new_output(out / SUMMARY, overwrite=True)  # a writable folder, probed before the long work


def recipe(cfg: RankCheckConfig) -> dict[str, Any]:
    """The fixed stand-alone recipe (what makes two checks' retrains comparable)."""
    return {"epochs": cfg.epochs, "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr}


def plan_archs(space: SearchSpace, model: CostModel, budgets: list, cfg: RankCheckConfig) -> dict[str, Any]:
    """``cfg.archs`` architectures, one per equal-width bin of ``model``'s cost between the 1st and
    99th percentile of uniform (within-budget) architectures; ``repeated`` of them, evenly spread
    by cost, get the extra seeds."""
    from spos_hw.nas.costs import Bound
    from spos_hw.nas.sampling import ConstrainedSampler, FeasibleSampler

    rng = np.random.default_rng([cfg.seed, 0xA5C])
    pool = FeasibleSampler(space, budgets, rng=rng).sample(20_000) if budgets else space.sample(rng, 20_000)
    lo, hi = (float(v) for v in np.percentile(model.cost(pool), [1, 99]))
    sampler = ConstrainedSampler(space, [Bound(model, lo, max(hi, lo)), *budgets], rng=rng, bins=cfg.archs)
    rows, seen = [], set()
    bins = list(sampler.live_bins)
    while len(rows) < cfg.archs and bins:  # one per bin; bins that hold nothing new are dropped
        for b in list(bins):
            row = sampler.draw_bin(b, 1)[0]
            key = str(space.decode(row)[0])
            if key in seen:
                bins.remove(b)
                continue
            seen.add(key)
            rows.append(row)
            if len(rows) == cfg.archs:
                break
    batch = np.stack(rows)
    order = np.argsort(model.cost(batch), kind="stable")
    batch = batch[order]
    archs = [str(a) for a in space.decode(batch)]
    repeated = sorted({int(round(i)) for i in np.linspace(0, len(archs) - 1, cfg.repeated)}) if cfg.repeated else []
    return {
        "archs": archs,
        "costs": [float(c) for c in model.cost(batch)],
        "cost_range": [lo, hi],
        "repeated": repeated,
        "within_budgets": bool(admits_all(budgets, batch).all()) if budgets else None,
    }


def _plan_key(space: SearchSpace, cfg: RankCheckConfig) -> dict[str, Any]:
    return {
        "space_fingerprint": space.fingerprint,
        "archs": cfg.archs,
        "repeated": cfg.repeated,
        "seeds": cfg.seeds,
        "stratify": cfg.stratify,
        "budgets": cfg.budget_values(),
        "seed": cfg.seed,
        "recipe": recipe(cfg),
    }


# ----------------------------------------------------------------------------- the check


def rank_check(config: RankCheckConfig, *, cost_models: CostModels = builtin_costs, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a rank check; returns ``rank_check.json``'s contents (see the module doc)."""
    import torch
    from tqdm.auto import tqdm

    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.data import CUSTOM_PREFIX
    from spos_hw.nas.recalibrate import scorer_for_checkpoint
    from spos_hw.nas.runs import retrain

    cfg = config
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    out = _check_out(cfg)
    net, ckpt = load_supernet(cfg.supernet)
    space = net.space
    costs = cost_models(space)
    budgets = budgets_from(costs, cfg.budget_values()) if cfg.budget_values() else []
    if budgets:
        check_budgets(space, budgets)  # an impossible budget fails at once, naming the achievable minimum
    model = pick_cost(costs, cfg.stratify)
    key = _plan_key(space, cfg)
    if (out / PLAN).is_file() and not cfg.overwrite:
        plan = read_json(out / PLAN, "rank-check plan")
        diffs = [k for k in key if plan.get("key", {}).get(k) != key[k]]
        if diffs:
            raise ArtifactMismatch(
                f"cannot resume {str(out)!r}: its plan was made with other {', '.join(diffs)}; use the same options, or a new --out"
            )
    else:
        plan = {"kind": "rank-check-plan", "format": FORMAT, "key": key, **plan_archs(space, model, budgets, cfg)}
    _prepare(cfg, out)
    if not (out / PLAN).is_file():
        atomic_write_json(out / PLAN, plan)
        atomic_write_json(out / "space.json", space.to_json())
    archs = plan["archs"]

    # 1. supernet scores (the search's scorer), cached per supernet file
    fp = file_sha256(cfg.supernet)[:16]
    scores = Ledger(out / SCORES)
    if fp not in scores:
        scorer, scoring = scorer_for_checkpoint(
            net, ckpt, data=cfg.data, recal_images=cfg.recal_images, holdout=cfg.holdout, seed=cfg.seed
        )
        rows = space.encode(space.arch(a) for a in archs)
        metrics = [scorer.evaluate(r) for r in tqdm(rows, desc="supernet scores", unit="arch", disable=not progress, leave=False)]
        scores.put(
            fp,
            {
                "supernet": str(cfg.supernet),
                "accuracy": [m["accuracy"] for m in metrics],
                "loss": [m["loss"] for m in metrics],
                "scoring": scoring,
            },
        )

    # 2. stand-alone retrains, each a checkpointed unit
    recorded = (ckpt.get("data") or {}).get("dataset")
    data = cfg.data if cfg.data is not None else recorded
    if isinstance(data, str) and data.startswith(CUSTOM_PREFIX):
        from spos_hw.errors import ArtifactError

        raise ArtifactError(
            f"the supernet was trained on your own datasets ({data}); pass them again (data=Datasets(train, test))"
        )
    units = [(i, cfg.seed) for i in range(len(archs))] + [
        (i, cfg.seed + s) for s in range(1, cfg.seeds) for i in plan["repeated"]
    ]
    ledger = Ledger(out / RETRAINS)
    todo = [u for u in units if f"{u[0]}:s{u[1]}" not in ledger]
    for i, seed in tqdm(todo, desc="stand-alone retrains", unit="net", disable=not progress):
        r = retrain(
            RetrainConfig(
                space=str(out / "space.json"),
                data=data,
                arch=archs[i],
                seed=seed,
                out=str(out / "retrain" / f"{i:02d}-s{seed}.pt"),
                resume=True,
                threads=cfg.threads,
                device=cfg.device,
                ckpt_every=100,
                log_every=100,
                **recipe(cfg),
            ),
            progress=False,
        )
        ledger.put(
            f"{i}:s{seed}",
            {
                "arch": archs[i],
                "seed": seed,
                "test_accuracy": r["test_accuracy"],
                "steps": r["steps"],
                "train_time_s": r["train_time_s"],
            },
        )
        log.info("retrain %d (seed %d): test accuracy %.4f", i, seed, r["test_accuracy"])

    # 3. statistics
    summary = summarize(cfg, plan, scores[fp], ledger, fp, model)
    atomic_write_json(out / SUMMARY, summary)
    scatter(summary, out / PLOT)
    beside = Path(cfg.supernet).with_suffix(".rank.json")
    try:
        atomic_write_json(beside, summary)
    except OutputError as exc:
        log.warning("could not write %s for search to find: %s", beside, exc)
    return summary


def summarize(cfg: RankCheckConfig, plan: dict, score: dict, ledger: Ledger, fp: str, model: CostModel) -> dict[str, Any]:
    archs = plan["archs"]
    truth = np.array([ledger[f"{i}:s{cfg.seed}"]["test_accuracy"] for i in range(len(archs))])
    acc, loss = np.array(score["accuracy"]), np.array(score["loss"])
    stats = dict(resamples=cfg.resamples, seed=cfg.seed)
    pairs = [
        (truth[i], ledger[f"{i}:s{cfg.seed + 1}"]["test_accuracy"]) for i in plan["repeated"] if f"{i}:s{cfg.seed + 1}" in ledger
    ]
    ceiling = None
    if len(pairs) >= 3:
        a, b = np.array(pairs).T
        ceiling = {**rank_agreement(a, b, **stats), "mean_abs_diff": float(np.abs(a - b).mean())}
    return {
        "kind": "rank-check",
        "format": FORMAT,
        "supernet": str(cfg.supernet),
        "supernet_fingerprint": fp,
        "space": plan["key"]["space_fingerprint"],
        "stratify": cfg.stratify,
        "cost_range": plan["cost_range"],
        "recipe": recipe(cfg),
        "archs": len(archs),
        "by_accuracy": rank_agreement(acc, truth, **stats),
        "by_neg_loss": rank_agreement(-loss, truth, **stats),
        "by_cost": rank_agreement(plan["costs"], truth, **stats),
        "noise_ceiling": ceiling,
        "null_tau_sd": null_tau_sd(len(archs)),
        "standalone": {
            "mean": float(truth.mean()),
            "min": float(truth.min()),
            "max": float(truth.max()),
            "std": float(truth.std()),
        },
        "supernet_score": {"mean": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max())},
        "scoring": score["scoring"],
        "table": [
            {"arch": a, "cost": c, "supernet_accuracy": float(s), "supernet_loss": float(lo), "standalone_accuracy": float(t)}
            for a, c, s, lo, t in zip(archs, plan["costs"], acc, loss, truth)
        ],
    }


def scatter(summary: dict, path: Path) -> None:
    """Supernet score against stand-alone accuracy, with tau and its CI (PNG, atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = summary["table"]
    x = np.array([r["supernet_accuracy"] for r in t]) * 100
    y = np.array([r["standalone_accuracy"] for r in t]) * 100
    c = np.array([r["cost"] for r in t])
    s = summary["by_accuracy"]
    fig, ax = plt.subplots(figsize=(6, 4.6), dpi=120)
    pts = ax.scatter(x, y, c=c, cmap="viridis", s=22)
    fig.colorbar(pts, ax=ax, label=summary["stratify"])
    ci = s["tau_ci"] or [float("nan")] * 2
    ceil = summary["noise_ceiling"]
    note = f"; seeds agree at tau {ceil['tau']:.2f}" if ceil and ceil["tau"] is not None else ""
    tau = "undefined (constant)" if s["tau"] is None else f"{s['tau']:.2f} (95% CI {ci[0]:.2f}..{ci[1]:.2f})"
    ax.set_title(f"Kendall tau {tau}, n={s['n']}{note}", fontsize=9)
    ax.set_xlabel("held-out top-1 with supernet weights (%)")
    ax.set_ylabel("stand-alone test top-1 (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def find_rank_check(supernet: str | Path) -> dict[str, Any] | None:
    """The rank check written beside ``supernet`` for this very file, if there is one."""
    path = Path(supernet).with_suffix(".rank.json")
    if not path.is_file():
        return None
    try:
        found = read_json(path, "rank check")
    except Exception:  # a broken companion file only means: no trusted figure
        return None
    if not isinstance(found, dict) or found.get("supernet_fingerprint") != file_sha256(supernet)[:16]:
        return None
    return found


__all__ = ["RankCheckConfig", "find_rank_check", "null_tau_sd", "rank_agreement", "rank_check"]
