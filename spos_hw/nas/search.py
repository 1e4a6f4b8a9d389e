"""The search driver: propose, check budgets, score (distributed), cache, checkpoint, report.

``run_search(strategy, scorer, ...)`` is the loop. It works with any strategy of
``nas.evolution`` and any scorer (a callable from an ``ArchBatch`` to one score per row), so
it is tested with toy scorers; ``search_supernet(...)`` wires in the trained supernet, the
dataset's held-out split and the cost models, and is what ``spos-hw search`` calls.

Per generation: the strategy proposes new within-budget candidates; each rank scores its
share (``i % world == rank``) and the scores are summed over ranks (exact: the other ranks
contribute zeros); every rank tells the strategy the same scores, so every rank's strategy
stays identical. Rank 0 writes ``state.json`` atomically after every generation, and also
mid-generation every ``checkpoint_s`` seconds with the scores done so far, so a killed
search loses at most that much work and a resumed one ends exactly as an uninterrupted one.

Artifacts in ``out`` (rank 0 only, atomic writes): ``result.json``, ``history.json``,
``pareto.json``, ``pareto_<cost>.png`` and ``state.json``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from spos_hw.errors import ArtifactError, ArtifactMismatch, Infeasible, OutputError, SpaceError
from spos_hw.io import atomic_write_json, check_new_output, read_json
from spos_hw.nas.evolution import Budget, RandomSearch, admits_all, display
from spos_hw.nas.pareto import pareto_front, plot_front
from spos_hw.nas.space import CostModel, SearchSpace

log = logging.getLogger(__name__)

FORMAT = 1
BUDGET_FLAGS = {"latency": ("--latency-ms", "latency_ms"), "flops": ("--flops-m", "flops"), "params": ("--params-m", "params"), "bitops": ("--bitops-g", "bitops")}
"""Budget kinds: the CLI flag and the result.json key of each."""

Scorer = Callable[[np.ndarray], np.ndarray]

RESUME_FREE = frozenset({"generations"})
"""Config keys a resumed search may change: more generations extend a search exactly as if it
had been started with them (the state after generation g does not depend on the total)."""


class _Alone:
    """Single-process stand-in for ``nas.distributed.Dist``."""

    rank, world, main, active = 0, 1, True, False

    def all_sum(self, t):
        return t


# ----------------------------------------------------------------------------- costs


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
        out.append({
            "arch": h["arch"],
            "arch_json": arch.to_json(),
            "score": h["score"],
            "generation": h["generation"],
            "origin": h["origin"],
            "costs": {name: _value(name, table[name][i]) for name in costs},
        })  # fmt: skip
    return out


def pick_best(space: SearchSpace, entries: Sequence[dict], budgets: Sequence[Budget]) -> int | None:
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


# ----------------------------------------------------------------------------- the loop


@dataclass
class SearchResult:
    best: dict[str, Any] | None
    entries: list[dict[str, Any]]
    generations: int
    evaluated: int
    elapsed_s: float
    summary: dict[str, Any]


def _digest(batch: np.ndarray) -> float:
    """A 48-bit digest of a generation's candidates (exact in float64) to check ranks agree."""
    return float(int.from_bytes(hashlib.sha256(np.ascontiguousarray(batch, dtype=np.int64).tobytes()).digest()[:6], "big"))


def _gather_scores(dist, n: int, mine: dict[int, float], digest: float) -> np.ndarray:
    """Every rank's scores on every rank (sums: the other ranks contribute exact zeros)."""
    if not dist.active:
        return np.array([mine[i] for i in range(n)], dtype=np.float64)
    import torch

    vals = torch.zeros(2 * n + 1, dtype=torch.float64)
    for i, s in mine.items():
        vals[i] = s
        vals[n + i] = 1.0
    vals[2 * n] = digest
    total = dist.all_sum(vals).numpy()
    if total[2 * n] != digest * dist.world:
        raise RuntimeError("ranks proposed different candidates (differing seeds, options or state); aborting the search")
    if not np.all(total[n : 2 * n] == 1.0):
        raise RuntimeError("a candidate was scored by no rank or by several ranks")
    return total[:n]


class _Checkpointer:
    """``state.json``: the strategy after the last full generation + scores of the current one."""

    def __init__(self, path: Path | None, meta: Mapping[str, Any], every_s: float) -> None:
        self.path, self.meta, self.every_s = path, meta, every_s
        self.last = time.monotonic()

    def write(self, strategy_state: dict[str, Any], pending: Mapping[str, float], elapsed: float, *, force: bool) -> None:
        """Save ``strategy_state`` (taken before the pending generation was proposed) and its scores so far."""
        if self.path is None or not (force or time.monotonic() - self.last >= self.every_s):
            return
        atomic_write_json(self.path, {
            "kind": "search-state",
            "format": FORMAT,
            "config": self.meta.get("config", {}),
            "strategy": strategy_state,
            "pending": {"generation": strategy_state["generation"], "scores": dict(pending)},
            "elapsed_s": round(elapsed, 3),
        })  # fmt: skip
        self.last = time.monotonic()


def _short(v: Any) -> str:
    if isinstance(v, list) and v and all(isinstance(d, dict) and "cost" in d and "limit" in d for d in v):
        return "[" + ", ".join(f"{d['cost']} <= {d['limit']:g}" for d in v) + "]"
    return repr(v)


def load_state(path: Path, config: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """A saved search state, refused when it was made with another configuration.

    With ``partial`` only the keys of ``config`` are compared (an early check before the data is loaded).
    """
    state = read_json(path, "search state")
    if not isinstance(state, dict) or state.get("kind") != "search-state" or "strategy" not in state:
        raise ArtifactError(f"{str(path)!r} is not a spos-hw search state")
    if state.get("format") != FORMAT:
        raise ArtifactMismatch(f"{str(path)!r} has search-state format {state.get('format')}; this version reads {FORMAT}")
    old = state.get("config", {})
    diffs = [
        f"{k}={_short(old.get(k))} (now {_short(config.get(k))})"
        for k in sorted(set(config) if partial else set(old) | set(config))
        if k not in RESUME_FREE and old.get(k) != config.get(k)
    ]
    if diffs:
        raise ArtifactMismatch(
            f"cannot resume {str(path)!r}: it was made with " + "; ".join(diffs[:3]) + ("..." if len(diffs) > 3 else "")
            + "; use the same options, or a new --out"
        )  # fmt: skip
    return state


def run_search(
    strategy: RandomSearch,
    scorer: Scorer,
    *,
    costs: Mapping[str, CostModel],
    out: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    dist: Any = None,
    checkpoint_s: float = 30.0,
    plots: bool = True,
) -> SearchResult:
    """Run ``strategy`` to the end, scoring new candidates with ``scorer``.

    Args:
        strategy: a fresh ``EvolutionSearch`` / ``RandomSearch`` (resume loads its state).
        scorer: ``ArchBatch -> scores`` (higher is better); called with this rank's share.
        costs: every cost model to record per candidate (the budgets' models included).
        out: folder for the artifacts (None: nothing is written).
        meta: what ``result.json`` records (space, supernet, data, ``config``); ``config``
            must match for ``--resume``.
        resume: continue from ``out/state.json`` when it exists.
        overwrite: replace an earlier search's artifacts in ``out``.
        progress: tqdm bars (rank 0).
        dist: ``nas.distributed.Dist`` under torchrun (None: one process).
        checkpoint_s: mid-generation checkpoint interval (a full one follows every generation).
        plots: write ``pareto_<cost>.png``.
    """
    dist = dist or _Alone()
    meta = dict(meta or {})
    meta.setdefault("config", {})
    space = strategy.space
    out_dir = None if out is None else _prepare_out(out, resume=resume, overwrite=overwrite) if dist.main else Path(out)
    writes = out_dir is not None and dist.main
    state_path = out_dir / "state.json" if out_dir is not None else None
    ckpt = _Checkpointer(state_path if writes else None, meta, checkpoint_s)
    pending: dict[str, float] = {}
    elapsed0 = 0.0
    if resume and state_path is not None and state_path.is_file():
        state = load_state(state_path, meta["config"])
        strategy.load_state_dict(state["strategy"])
        if int(state["pending"]["generation"]) == strategy.generation:
            pending = {str(k): float(v) for k, v in state["pending"]["scores"].items()}
        elapsed0 = float(state.get("elapsed_s", 0.0))
        log.info("resuming after generation %d (%d evaluated, %d of the next already scored)", strategy.generation, strategy.evaluated, len(pending))
    elif resume:
        log.info("nothing to resume in %s: starting a new search", out_dir)
    start = time.monotonic()
    bar = None
    if progress and dist.main:
        from tqdm.auto import tqdm

        total = strategy.population * strategy.generations
        bar = tqdm(total=total, initial=min(total, strategy.evaluated), desc=f"{strategy.name} search", unit="arch")
        _postfix(bar, strategy)
    try:
        while not strategy.done:
            before = strategy.state_dict()
            batch, origins = strategy.propose()
            if not len(batch):
                break
            keys = [strategy.key(r) for r in batch]
            mine: dict[int, float] = {}
            todo = []
            for i, k in enumerate(keys):
                if i % dist.world != dist.rank:
                    continue
                if k in pending:
                    mine[i] = pending[k]
                else:
                    todo.append(i)
            for i in todo:
                score = float(np.asarray(scorer(batch[i : i + 1])).reshape(-1)[0])
                mine[i] = score
                pending[keys[i]] = score
                if bar is not None:  # rank 0's share stands for every rank's
                    bar.update(min(dist.world, bar.total - bar.n))
                ckpt.write(before, pending, elapsed0 + time.monotonic() - start, force=False)
            scores = _gather_scores(dist, len(batch), mine, _digest(batch))
            strategy.tell(batch, scores, origins)
            pending = {}
            ckpt.write(strategy.state_dict(), pending, elapsed0 + time.monotonic() - start, force=True)
            if writes:
                _write_history(out_dir, space, history_entries(space, strategy.history, costs), strategy.generation, meta)
            best = strategy.best()
            if dist.main:  # the bar shows it already; a log line would break the bar
                log.log(logging.DEBUG if bar is not None else logging.INFO, "generation %d/%d: %d new candidates, %d evaluated, best %.4f (%s)", strategy.generation,
                         strategy.generations, len(batch), strategy.evaluated, best["score"], best["arch"])  # fmt: skip
            if bar is not None:
                bar.n = min(bar.total, strategy.evaluated)
                _postfix(bar, strategy)
    finally:
        if bar is not None:
            bar.close()
    elapsed = elapsed0 + time.monotonic() - start
    return _finish(strategy, costs, meta, out_dir if writes else None, elapsed, plots)


def _postfix(bar, strategy: RandomSearch) -> None:
    best = strategy.best()
    bar.set_postfix_str(f"generation {min(strategy.generation + 1, strategy.generations)}/{strategy.generations}, best {best['score']:.4f}" if best else "")


def _prepare_out(out: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """The output folder, created if needed; an earlier search in it is refused unless resumed or overwritten."""
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {str(out_dir)!r} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {str(out_dir)!r}: {exc.strerror}") from None
    for name in ("result.json", "state.json"):
        check_new_output(out_dir / name, overwrite=overwrite, resume=resume)
    if overwrite and not resume:
        for old in [*out_dir.glob("pareto_*.png"), out_dir / "state.json", out_dir / "result.json"]:
            old.unlink(missing_ok=True)
    return out_dir


# ----------------------------------------------------------------------------- artifacts


def _header(space: SearchSpace, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {"space_name": space.name, "fingerprint": space.fingerprint, "space": space.to_json(), **{k: v for k, v in meta.items() if k != "config"}, "config": meta.get("config", {})}


def _write_history(out_dir: Path, space: SearchSpace, entries: list[dict], generation: int, meta: Mapping[str, Any]) -> None:
    atomic_write_json(out_dir / "history.json", {"kind": "search-history", "format": FORMAT, **_header(space, meta), "generation": generation, "entries": entries})


def describe_arch(space: SearchSpace, entry: Mapping[str, Any], budgets: Sequence[Budget]) -> dict[str, Any]:
    """What ``result.json`` says about one candidate: arch, accuracy, every cost, the budgets met."""
    out: dict[str, Any] = {"arch": entry["arch"], "arch_json": entry["arch_json"], "accuracy": entry["score"]}
    for name, v in entry["costs"].items():
        out[BUDGET_FLAGS.get(name, (None, name))[1]] = v
    out["budgets"] = [{**b.to_json(), "value": entry["costs"].get(b.name), "met": bool(entry["costs"].get(b.name, math.inf) <= b.limit)} for b in budgets]
    out["generation"], out["origin"] = entry["generation"], entry["origin"]
    return out


def _finish(strategy: RandomSearch, costs, meta, out_dir: Path | None, elapsed: float, plots: bool) -> SearchResult:
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
    }
    fronts = {b.name: [entries[i] for i in pareto_front([e["score"] for e in entries], [e["costs"][b.name] for e in entries])] for b in budgets}
    if out_dir is not None:
        _write_history(out_dir, space, entries, strategy.generation, meta)
        atomic_write_json(out_dir / "pareto.json", {"kind": "search-pareto", "format": FORMAT, "space_name": space.name, "fronts": fronts})
        if plots and entries:
            for b in budgets:
                _plot(out_dir / f"pareto_{b.name}.png", entries, b, best_i, f"{space.name}: {strategy.name} search, {len(entries)} candidates")
        atomic_write_json(out_dir / "result.json", summary)
    return SearchResult(best, entries, strategy.generation, len(entries), elapsed, summary)


def _plot(path: Path, entries: Sequence[dict], budget: Budget, chosen: int | None, title: str) -> None:
    costs = [e["costs"][budget.name] for e in entries]
    scores = [e["score"] for e in entries]
    scale = float(getattr(budget.model, "scale", 1.0) or 1.0)
    unit = display(budget.model, scale).split(" ", 1)[-1] if scale != 1.0 else getattr(budget.model, "unit", "")
    suffix = {1e3: "k", 1e6: "M", 1e9: "G"}.get(scale, "")
    plot_front(
        path, costs=costs, scores=scores, front=pareto_front(scores, costs), chosen=chosen, budget=budget.limit,
        xlabel=f"{budget.name} ({suffix}{unit})", scale=scale, title=title, origins=[e["origin"] for e in entries],
    )  # fmt: skip


# ----------------------------------------------------------------------------- supernet search


def budget_list(costs: Mapping[str, CostModel], values: Mapping[str, float | None]) -> list[Budget]:
    """Budgets from display-scale values (``{"flops": 330}`` is 330M FLOPs); None means no budget."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if name not in BUDGET_FLAGS:
            raise SpaceError(f"unknown budget {name!r}; choose from {', '.join(BUDGET_FLAGS)}")
        if name not in costs:
            raise SpaceError(f"{BUDGET_FLAGS[name][0]} needs a latency table: pass --lut lut.json (made by `spos-hw profile`)")
        out.append(Budget.scaled(costs[name], value))
    if not out:
        raise SpaceError("give at least one budget: " + ", ".join(f[0] for f in BUDGET_FLAGS.values()))
    return out


def cost_models(space: SearchSpace, lut: str | Path | None = None) -> dict[str, CostModel]:
    """What every candidate is priced with: FLOPs, params, BitOps, and predicted latency given a table."""
    costs = {name: space.cost_model(name) for name in ("flops", "params", "bitops")}
    if lut is not None:
        from spos_hw.nas.sampling import cost_model

        costs["latency"] = cost_model(space, "latency", str(lut))
    return costs


def file_fingerprint(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def search_supernet(
    *,
    supernet: str | Path,
    budgets: Mapping[str, float | None],
    lut: str | Path | None = None,
    data: str | None = None,
    strategy: str = "evolution",
    options: Mapping[str, Any] | None = None,
    recal_images: int | None = None,
    recal_batch_size: int = 128,
    holdout: int | None = None,
    eval_batch_size: int = 500,
    seed: int = 0,
    out: str | Path = "search",
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = True,
    checkpoint_s: float = 30.0,
) -> dict[str, Any]:
    """Search a trained supernet under budgets; what ``spos-hw search`` runs. Returns the result summary.

    Args:
        supernet: a ``spos-hw train-supernet`` checkpoint.
        budgets: ``{"latency": ms, "flops": M, "params": M, "bitops": G}`` (None: unconstrained).
        lut: the latency table (``spos-hw profile``) a latency budget is predicted from.
        data: the dataset (default: the one the supernet was trained on); its held-out split
            is rebuilt from the checkpoint.
        strategy: ``evolution`` or ``random``; ``options`` are its keyword options.
        recal_images: training images for BN recalibration (default: the paper's 25,600 of
            1.23M scaled to the training split), rounded up to whole ``recal_batch_size`` batches.
        holdout: score on the first this many held-out images (default: all of them).
        seed: the search's RNG and the choice of recalibration images.
        out: the output folder.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        threads: torch CPU threads (default: torch's).
    """
    import torch

    import spos_hw.nas.spaces  # noqa: F401  (registers the space families a checkpoint's spec names)
    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.distributed import init_distributed, shutdown
    from spos_hw.nas.evolution import make_strategy
    from spos_hw.nas.recalibrate import scorer_for_checkpoint

    if threads is not None and threads < 1:
        raise SpaceError(f"--threads must be >= 1, got {threads}")
    if threads is not None:
        torch.set_num_threads(threads)
    dist = init_distributed(device)
    try:
        if dist.main:  # refuse a used folder before any work (other ranks never write)
            _prepare_out(out, resume=resume, overwrite=overwrite)
        net, ckpt = load_supernet(supernet)
        space = net.space
        costs = cost_models(space, lut)
        blist = budget_list(costs, budgets)
        opts = dict(options or {})
        search = make_strategy(strategy, space, blist, rng=np.random.default_rng(seed), **opts)
        fp = file_fingerprint(supernet)
        config = {
            **search.config(),
            "seed": seed,
            "budgets": [b.to_json() for b in blist],
            "space_fingerprint": space.fingerprint,
            "supernet_fingerprint": fp,
            "lut_fingerprint": file_fingerprint(lut) if lut is not None else None,
        }
        state_path = Path(out) / "state.json"
        if resume and state_path.is_file():  # refuse a mismatched resume before loading the data
            load_state(state_path, config, partial=True)
        scorer, scoring = scorer_for_checkpoint(
            net, ckpt, data=data, recal_images=recal_images, recal_batch_size=recal_batch_size, holdout=holdout,
            eval_batch_size=eval_batch_size, seed=seed, device=dist.device,
        )  # fmt: skip
        config = {**config, **scoring}
        if dist.main:
            log.info("scoring: BN recalibrated on %d training images (batches of %d), top-1 on %d held-out images",
                     scoring["recal_images"], scoring["recal_batch_size"], scoring["holdout_images"])  # fmt: skip
        meta = {
            "seed": seed,
            "supernet": {"path": str(supernet), "fingerprint": fp, "step": ckpt.get("step")},
            "lut": str(lut) if lut is not None else None,
            "data": scoring,
            "config": config,
        }
        result = run_search(
            search, scorer, costs=costs, out=out, meta=meta, resume=resume, overwrite=overwrite,
            progress=progress, dist=dist, checkpoint_s=checkpoint_s,
        )  # fmt: skip
        return result.summary
    finally:
        shutdown(dist)


def report_search(out: str | Path, budgets: Mapping[str, float | None], *, lut: str | Path | None = None) -> dict[str, Any]:
    """The best evaluated candidate of a finished (or running) search under other budgets; nothing is re-scored.

    Costs are recomputed from each architecture with the cost models, so any budget kind works
    whose model is available (latency with ``lut``). Only candidates the search evaluated can
    be picked: they met the search's own budgets.
    """
    import spos_hw.nas.spaces  # noqa: F401  (registers the space families from_json needs)

    path = Path(out) / "history.json"
    hist = read_json(path, "search history")
    if not isinstance(hist, dict) or hist.get("kind") != "search-history":
        raise ArtifactError(f"{str(path)!r} is not a spos-hw search history")
    try:
        space = SearchSpace.from_json(hist["space"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{str(path)!r} has no usable space spec ({exc})") from None
    if space.fingerprint != hist.get("fingerprint"):
        raise ArtifactMismatch(f"{str(path)!r} records space fingerprint {hist.get('fingerprint')}, its spec hashes to {space.fingerprint}")
    costs = cost_models(space, lut)
    blist = budget_list(costs, budgets)
    raw = hist.get("entries") or []
    entries = history_entries(space, raw, costs)
    best = pick_best(space, entries, blist)
    if best is None:
        cheapest = ", ".join(f"{b.name} {display(b.model, min(e['costs'][b.name] for e in entries))}" for b in blist) if entries else "none"
        raise Infeasible(
            f"none of the {len(entries)} candidates evaluated in {str(out)!r} meets {' and '.join(b.describe() for b in blist)} "
            f"(cheapest evaluated: {cheapest}); run a search with these budgets"
        )  # fmt: skip
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
    "BUDGET_FLAGS",
    "SearchResult",
    "budget_list",
    "cost_models",
    "cost_table",
    "describe_arch",
    "history_entries",
    "load_state",
    "pick_best",
    "report_search",
    "run_search",
    "search_supernet",
]
