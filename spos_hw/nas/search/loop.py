"""The search loop: propose, score (distributed), cache, checkpoint, and the search state file.

``run_search(strategy, scorer, ...)`` works with any ``nas.strategy.Strategy`` and any scorer (a
callable from an ``ArchBatch`` to one score per row), so it is tested with toy scorers.

Per generation: the strategy proposes new within-budget candidates; each rank scores its
share (``i % world == rank``) and the scores are summed over ranks (exact: the other ranks
contribute zeros); every rank tells the strategy the same scores, so every rank's strategy
stays identical. Rank 0 writes ``state.json`` atomically after every generation, and also
mid-generation every ``checkpoint_s`` seconds with the scores done so far, so a killed
search loses at most that much work and a resumed one ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.errors import ArtifactError, ArtifactMismatch, OutputError
from spos_hw.io import atomic_write_json, check_new_output, read_json
from spos_hw.nas.search.artifacts import FORMAT, SearchResult, finish, history_entries, write_history
from spos_hw.nas.space import CostModel
from spos_hw.nas.strategy import Strategy

log = logging.getLogger(__name__)

Scorer = Callable[[np.ndarray], np.ndarray]

RESUME_FREE = frozenset({"generations"})
"""Config keys a resumed search may change: more generations extend a search exactly as if it
had been started with them (the state after generation g does not depend on the total)."""


class _Alone:
    """Single-process stand-in for ``nas.distributed.Dist``."""

    rank, world, main, active = 0, 1, True, False

    def all_sum(self, t):
        return t


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
        atomic_write_json(
            self.path,
            {
                "kind": "search-state",
                "format": FORMAT,
                "config": self.meta.get("config", {}),
                "strategy": strategy_state,
                "pending": {"generation": strategy_state["generation"], "scores": dict(pending)},
                "elapsed_s": round(elapsed, 3),
            },
        )
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
            f"cannot resume {str(path)!r}: it was made with "
            + "; ".join(diffs[:3])
            + ("..." if len(diffs) > 3 else "")
            + "; use the same options, or a new --out"
        )
    return state


def run_search(
    strategy: Strategy,
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
        strategy: a fresh ``Strategy`` (``EvolutionSearch``, ``RandomSearch``); resume loads its state.
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
    out_dir = None if out is None else prepare_out(out, resume=resume, overwrite=overwrite) if dist.main else Path(out)
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
        log.info(
            "resuming after generation %d (%d evaluated, %d of the next already scored)",
            strategy.generation,
            strategy.evaluated,
            len(pending),
        )
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
                write_history(out_dir, space, history_entries(space, strategy.history, costs), strategy.generation, meta)
            best = strategy.best()
            if dist.main:  # the bar shows it already; a log line would break the bar
                log.log(
                    logging.DEBUG if bar is not None else logging.INFO,
                    "generation %d/%d: %d new candidates, %d evaluated, best %.4f (%s)",
                    strategy.generation,
                    strategy.generations,
                    len(batch),
                    strategy.evaluated,
                    best["score"],
                    best["arch"],
                )
            if bar is not None:
                bar.n = min(bar.total, strategy.evaluated)
                _postfix(bar, strategy)
    finally:
        if bar is not None:
            bar.close()
    elapsed = elapsed0 + time.monotonic() - start
    return finish(strategy, costs, meta, out_dir if writes else None, elapsed, plots)


def _postfix(bar, strategy: Strategy) -> None:
    best = strategy.best()
    bar.set_postfix_str(
        f"generation {min(strategy.generation + 1, strategy.generations)}/{strategy.generations}, best {best['score']:.4f}"
        if best
        else ""
    )


def check_out(out: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Refuse, before any work, an output that cannot be a search folder; create nothing yet.

    ``out`` may be missing (it is created when the search starts writing), but its parent must
    exist: a mistyped path fails here instead of growing a tree of folders. An earlier search in
    ``out`` is refused unless resumed or overwritten.
    """
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {str(out_dir)!r} exists and is not a folder")
    if out_dir.is_dir():
        for name in ("result.json", "state.json"):
            check_new_output(out_dir / name, overwrite=overwrite, resume=resume)
        return out_dir
    parent = out_dir.parent if str(out_dir.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot create output folder {str(out_dir)!r}: {str(parent)!r} does not exist (create it first)")
    try:
        check_new_output(out_dir, overwrite=overwrite, resume=resume)  # probes the parent with a real file
    except OutputError as exc:
        raise OutputError(f"cannot create output folder {str(out_dir)!r}: {exc}") from None
    return out_dir


def prepare_out(out: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """The output folder, checked (``check_out``) and created; with ``overwrite`` an earlier search's files go."""
    out_dir = check_out(out, resume=resume, overwrite=overwrite)
    try:
        out_dir.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {str(out_dir)!r}: {exc.strerror}") from None
    if overwrite and not resume:
        for old in [*out_dir.glob("pareto_*.png"), out_dir / "state.json", out_dir / "result.json"]:
            old.unlink(missing_ok=True)
    return out_dir


__all__ = ["RESUME_FREE", "Scorer", "check_out", "load_state", "prepare_out", "run_search"]
