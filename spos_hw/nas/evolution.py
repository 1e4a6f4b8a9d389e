"""Search strategies over architectures under cost budgets: evolution (the paper) and random.

No torch here. A strategy proposes one generation of *new* candidates at a time as an
``ArchBatch`` (``propose``), is told their scores (``tell``), and keeps the history: every
evaluated architecture with its score, generation and origin. The history is the cache:
an architecture already evaluated is never proposed again. Every candidate meets every
budget before it is proposed (vectorized over the batch with the cost models). The strategy
owns its ``numpy.random.Generator``; ``state_dict`` captures it with the history, so a
search resumed from the state after generation ``g`` proposes exactly what an uninterrupted
one would.

Evolution follows the official SPOS search: generation 0 is ``population`` random
architectures within the budgets; then each generation takes the ``topk`` best of everything
evaluated so far as parents, makes ``mutations`` children (each block redrawn with
probability ``mutation_prob``, all its searched dimensions at once) and ``crossovers``
children (each block from one of two parents with probability 1/2), and fills up to
``population`` with random ones. ``generations`` counts evaluated generations, the initial
one included (20 x 50 = 1,000 candidates at the paper's settings). Random search evaluates
the same number of random architectures within the budgets (the paper's baseline).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from spos_hw.errors import Infeasible, SpaceError
from spos_hw.nas.space import CostModel, SearchSpace

log = logging.getLogger(__name__)

STRATEGIES = ("evolution", "random")
ORIGINS = ("random", "mutation", "crossover")


# ----------------------------------------------------------------------------- budgets


def display(model: CostModel, value: float) -> str:
    """``value`` in the model's display scale: ``330M FLOPs``, ``1.25 ms``."""
    scale = float(getattr(model, "scale", 1.0) or 1.0)
    suffix = {1e3: "k", 1e6: "M", 1e9: "G"}.get(scale, "")
    return f"{value / scale:.6g}{suffix} {getattr(model, 'unit', '')}".rstrip()


@dataclass(frozen=True)
class Budget:
    """An upper limit ``model.cost(arch) <= limit``, in the model's own unit (FLOPs, ms ...)."""

    model: CostModel
    limit: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.limit) or self.limit <= 0:
            raise SpaceError(f"the {self.name} budget must be a positive number, got {self.limit}")

    @classmethod
    def scaled(cls, model: CostModel, value: float) -> "Budget":
        """A budget in the model's display scale: ``Budget.scaled(space.flops, 330)`` is 330M FLOPs."""
        return cls(model, float(value) * float(getattr(model, "scale", 1.0) or 1.0))

    @property
    def name(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)

    def admits(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.cost(batch)) <= self.limit

    def describe(self) -> str:
        return f"{self.name} <= {display(self.model, self.limit)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cost": self.name,
            "limit": self.limit,
            "unit": getattr(self.model, "unit", ""),
            "scale": float(getattr(self.model, "scale", 1.0) or 1.0),
        }


def admits_all(budgets: Sequence[Budget], batch: np.ndarray) -> np.ndarray:
    """Boolean mask over an ``ArchBatch``: which rows meet every budget."""
    mask = np.ones(np.asarray(batch).shape[0], dtype=bool)
    for b in budgets:
        mask &= b.admits(batch)
    return mask


def _bounds(model: CostModel) -> tuple[float, float] | None:
    fn = getattr(model, "bounds", None)
    return tuple(map(float, fn())) if callable(fn) else None  # type: ignore[return-value]


def _per_block(model: CostModel) -> np.ndarray | None:
    pb = getattr(model, "per_block", None)
    return None if pb is None else np.asarray(pb, dtype=np.float64)


def _rows_from_flat(space: SearchSpace, flat: np.ndarray) -> np.ndarray:
    batch = np.zeros(flat.shape + (4,), dtype=np.int64)
    for d, idx in enumerate(np.unravel_index(flat, space.sizes)):
        batch[..., d] = idx
    return batch


def check_budgets(space: SearchSpace, budgets: Sequence[Budget]) -> np.ndarray:
    """Fail at once, naming the achievable minimum, when no architecture can meet the budgets.

    Each budget alone is checked against its model's exact minimum (``bounds()``). Several
    additive budgets are checked jointly by Lagrangian bounds: for weights ``w >= 0``,
    ``min_a sum_k w_k cost_k(a) / limit_k`` is an exact per-block minimum; if it exceeds
    ``sum_k w_k`` for any ``w``, no architecture meets all budgets (proved, not guessed).
    The minimizers of those weighted sums are returned as witnesses: the ones that meet every
    budget (possibly none, when the check cannot decide; bounded sampling decides then).
    """
    if not budgets:
        raise SpaceError("at least one budget is required (latency, FLOPs, params or BitOps)")
    minima: list[str] = []
    for b in budgets:
        bounds = _bounds(b.model)
        if bounds is not None:
            minima.append(f"{b.name} {display(b.model, bounds[0])}")
            if bounds[0] > b.limit:
                raise Infeasible(
                    f"no architecture of space {space.name!r} meets {b.describe()}: "
                    f"the achievable minimum is {display(b.model, bounds[0])}"
                )
    tables = [_per_block(b.model) for b in budgets]
    if any(t is None or t.shape != (space.num_blocks, int(np.prod(space.sizes))) for t in tables):
        return np.zeros((0, space.num_blocks, 4), dtype=np.int64)
    fixed = np.array([float(getattr(b.model, "fixed", 0.0)) for b in budgets])
    limits = np.array([b.limit for b in budgets])
    allowed = space.choice_mask().reshape(space.num_blocks, -1)  # choices a block does not allow are never minimizers
    norm = np.stack([np.where(allowed, t, 0.0) / lim for t, lim in zip(tables, limits)])  # [k, blocks, choices]
    k = len(budgets)
    spread = np.random.default_rng(0).dirichlet(np.ones(k), 62)  # a fixed set of weightings, not the search's RNG
    weights = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k), spread])
    combined = np.where(allowed[None], np.einsum("wk,kbc->wbc", weights, norm), np.inf)  # [w, blocks, choices]
    lower = weights @ (fixed / limits) + combined.min(axis=2).sum(axis=1)
    bad = np.flatnonzero(lower > weights.sum(axis=1) * (1 + 1e-12))
    if bad.size:
        raise Infeasible(
            f"no architecture of space {space.name!r} meets {' and '.join(b.describe() for b in budgets)} at once "
            f"(each alone is achievable: minimum {', '.join(minima)})"
        )
    witnesses = _rows_from_flat(space, combined.argmin(axis=2))
    return witnesses[admits_all(budgets, witnesses)]


class FeasibleSampler:
    """Uniform architectures among those meeting every budget, by bounded rejection.

    Proposals are uniform over the whole space; each returned row meets every budget (the
    distribution the official search's random candidates have). After ``max_tries``
    proposals without enough hits it raises ``Infeasible`` with the smallest costs seen.
    """

    def __init__(self, space: SearchSpace, budgets: Sequence[Budget], *, rng: np.random.Generator, max_tries: int = 200_000) -> None:
        self.space, self.budgets, self.rng, self.max_tries = space, tuple(budgets), rng, int(max_tries)

    def sample(self, n: int) -> np.ndarray:
        out: list[np.ndarray] = []
        tried, chunk = 0, 256
        best = {b.name: math.inf for b in self.budgets}
        while sum(len(o) for o in out) < n and tried < self.max_tries:
            props = self.space.sample(self.rng, min(chunk, self.max_tries - tried))
            tried += len(props)
            for b in self.budgets:
                best[b.name] = min(best[b.name], float(np.min(b.model.cost(props))))
            out.append(props[admits_all(self.budgets, props)])
            chunk = min(chunk * 2, 8192)
        rows = np.concatenate(out) if out else np.zeros((0, self.space.num_blocks, 4), dtype=np.int64)
        if len(rows) < n:
            seen = ", ".join(f"{b.name} {display(b.model, best[b.name])}" for b in self.budgets)
            raise Infeasible(
                f"found {len(rows)} of {n} architectures meeting {' and '.join(b.describe() for b in self.budgets)} "
                f"in {tried} random tries (smallest seen: {seen}); loosen the budgets"
            )
        return rows[:n]


def make_sampler(space: SearchSpace, budgets: Sequence[Budget], *, rng: np.random.Generator) -> FeasibleSampler:
    """The sampler of random candidates within the budgets (shares the strategy's RNG)."""
    return FeasibleSampler(space, budgets, rng=rng)


# ----------------------------------------------------------------------------- RNG state as JSON


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state with every integer as a string (PCG64 holds 128-bit integers)."""

    def enc(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: enc(x) for k, x in v.items()}
        return {"int": str(v)} if isinstance(v, int) and not isinstance(v, bool) else v

    return enc(rng.bit_generator.state)


def rng_state_from_json(rng: np.random.Generator, state: dict[str, Any]) -> None:
    def dec(v: Any) -> Any:
        if isinstance(v, dict):
            return int(v["int"]) if set(v) == {"int"} else {k: dec(x) for k, x in v.items()}
        return v

    rng.bit_generator.state = dec(state)


# ----------------------------------------------------------------------------- strategies


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpaceError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class RandomSearch:
    """The paper's baseline: ``generations`` x ``population`` random architectures within the budgets.

    Args:
        space: the search space.
        budgets: upper limits every candidate meets before it is proposed.
        rng: the generator every proposal comes from (part of the state).
        population: candidates per generation.
        generations: evaluated generations.
        max_tries: proposals allowed per wanted candidate before a generation stops short.
        sampler: random candidates within the budgets (default ``make_sampler``).
    """

    name = "random"

    def __init__(
        self,
        space: SearchSpace,
        budgets: Sequence[Budget],
        *,
        rng: np.random.Generator,
        population: int = 50,
        generations: int = 20,
        max_tries: int = 10,
        sampler: Any = None,
    ) -> None:
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator")
        self.space, self.budgets, self.rng = space, tuple(budgets), rng
        self.population = _positive_int("population", population)
        self.generations = _positive_int("generations", generations)
        self.max_tries = _positive_int("max_tries", max_tries)
        check_budgets(space, self.budgets)  # fails at once when the budgets cannot be met
        self.sampler = sampler if sampler is not None else make_sampler(space, self.budgets, rng=rng)
        self.generation = 0
        self.exhausted = False
        self.history: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []

    # --- hyperparameters
    def config(self) -> dict[str, Any]:
        return {"strategy": self.name, "population": self.population, "generations": self.generations, "max_tries": self.max_tries}

    # --- cache
    def key(self, row: np.ndarray) -> str:
        return str(self.space.decode(row)[0])

    def __contains__(self, key: str) -> bool:
        return key in self._index

    @property
    def evaluated(self) -> int:
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.exhausted or self.generation >= self.generations

    def scores(self) -> np.ndarray:
        s = np.array([h["score"] for h in self.history], dtype=np.float64)
        return np.where(np.isnan(s), -np.inf, s)

    def top(self, k: int) -> np.ndarray:
        """Indices into the history of the ``k`` best (ties: the earlier first)."""
        return np.argsort(-self.scores(), kind="stable")[:k]

    def best(self) -> dict[str, Any] | None:
        return self.history[int(self.top(1)[0])] if self.history else None

    # --- proposing
    def _collect(self, make: Callable[[int], np.ndarray], need: int, taken: dict[str, np.ndarray]) -> list[str]:
        """Up to ``need`` new, unique, within-budget rows from ``make``; at most ``need x max_tries`` proposals."""
        got: list[str] = []
        cap, tried = need * self.max_tries, 0
        while len(got) < need and tried < cap:
            n = min(max(2 * (need - len(got)), 8), cap - tried)
            props = make(n)
            tried += n
            for row in props[admits_all(self.budgets, props)]:
                key = self.key(row)
                if key in self._index or key in taken:
                    continue
                taken[key] = row
                got.append(key)
                if len(got) == need:
                    break
        return got

    def _random(self, need: int, taken: dict[str, np.ndarray]) -> list[str]:
        try:
            return self._collect(self.sampler.sample, need, taken)
        except Infeasible:
            if not self.history:
                raise  # the initial population: the budgets cannot be met, say so at once
            log.warning("generation %d: no more random architectures within the budgets could be drawn", self.generation)
            return []

    def _offspring(self, taken: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        return [(k, "random") for k in self._random(self.population, taken)]

    def propose(self) -> tuple[np.ndarray, list[str]]:
        """The next generation's new candidates (``ArchBatch``) and their origins.

        Calling it again before ``tell`` proposes something else: the RNG has moved on.
        """
        if self.done:
            return np.zeros((0, self.space.num_blocks, 4), dtype=np.int64), []
        taken: dict[str, np.ndarray] = {}
        picked = self._offspring(taken)
        if not picked:
            log.warning("no new architecture within the budgets could be found: the search stops at generation %d", self.generation)
            self.exhausted = True
            return np.zeros((0, self.space.num_blocks, 4), dtype=np.int64), []
        return np.stack([taken[k] for k, _ in picked]), [o for _, o in picked]

    def tell(self, batch: np.ndarray, scores: Sequence[float], origins: Sequence[str]) -> None:
        """Record the scores of the generation ``propose`` returned and move to the next one."""
        batch = np.asarray(batch)
        if len(batch) != len(scores) or len(batch) != len(origins):
            raise ValueError("tell() needs one score and one origin per proposed candidate")
        for row, score, origin in zip(batch, scores, origins):
            key = self.key(row)
            if key in self._index:
                raise ValueError(f"architecture {key} was already evaluated")
            self._index[key] = len(self.history)
            self._rows.append(np.array(row, dtype=np.int64))
            self.history.append({"arch": key, "score": float(score), "generation": self.generation, "origin": origin})
        self.generation += 1

    # --- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "config": self.config(),
            "generation": self.generation,
            "exhausted": self.exhausted,
            "rng": rng_state_to_json(self.rng),
            "history": [dict(h) for h in self.history],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("strategy") != self.name:
            raise SpaceError(f"state is for strategy {state.get('strategy')!r}, not {self.name!r}")
        self.generation = int(state["generation"])
        self.exhausted = bool(state.get("exhausted", False))
        rng_state_from_json(self.rng, state["rng"])
        self.history, self._index, self._rows = [], {}, []
        for h in state["history"]:
            arch = self.space.arch(h["arch"])
            self._index[str(arch)] = len(self.history)
            self._rows.append(arch.to_array())
            self.history.append({"arch": str(arch), "score": float(h["score"]), "generation": int(h["generation"]), "origin": h["origin"]})


class EvolutionSearch(RandomSearch):
    """The SPOS evolutionary search (defaults: the paper's settings).

    Args:
        space, budgets, rng, population, generations, max_tries, sampler: as ``RandomSearch``.
        topk: parents: the best ``topk`` of everything evaluated so far (default: population / 5,
            the paper's 10 of 50).
        mutations: mutated children per generation (default: population / 2, the paper's 25).
        crossovers: crossover children per generation (default: population / 2, the paper's 25).
        mutation_prob: probability that a block of a mutated child is redrawn.
    """

    name = "evolution"

    def __init__(
        self,
        space: SearchSpace,
        budgets: Sequence[Budget],
        *,
        rng: np.random.Generator,
        population: int = 50,
        topk: int | None = None,
        mutations: int | None = None,
        crossovers: int | None = None,
        generations: int = 20,
        mutation_prob: float = 0.1,
        max_tries: int = 10,
        sampler: Any = None,
    ) -> None:
        super().__init__(space, budgets, rng=rng, population=population, generations=generations, max_tries=max_tries, sampler=sampler)
        self.topk = _positive_int("topk", max(1, self.population // 5) if topk is None else topk)
        self.mutations = _positive_int("mutations", self.population // 2 if mutations is None else mutations, 0)
        self.crossovers = _positive_int("crossovers", self.population // 2 if crossovers is None else crossovers, 0)
        if self.mutations + self.crossovers > self.population:
            raise SpaceError(f"mutations + crossovers ({self.mutations} + {self.crossovers}) cannot exceed the population ({self.population})")
        if isinstance(mutation_prob, bool) or not isinstance(mutation_prob, (int, float)) or not 0 < mutation_prob <= 1:
            raise SpaceError(f"mutation_prob must be in (0, 1], got {mutation_prob!r}")
        self.mutation_prob = float(mutation_prob)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "topk": self.topk,
            "mutations": self.mutations,
            "crossovers": self.crossovers,
            "mutation_prob": self.mutation_prob,
        }

    def _parents(self) -> np.ndarray:
        return np.stack([self._rows[i] for i in self.top(self.topk)])

    def mutate(self, parents: np.ndarray, n: int) -> np.ndarray:
        """``n`` children of random parents, each block redrawn (all its dimensions) with ``mutation_prob``."""
        picked = parents[self.rng.integers(len(parents), size=n)]
        redraw = self.rng.random((n, self.space.num_blocks)) < self.mutation_prob
        fresh = self.space.sample(self.rng, n)
        return np.where(redraw[..., None], fresh, picked)

    def crossover(self, parents: np.ndarray, n: int) -> np.ndarray:
        """``n`` children, each block taken whole from one of two random parents."""
        a = parents[self.rng.integers(len(parents), size=n)]
        b = parents[self.rng.integers(len(parents), size=n)]
        take_a = self.rng.random((n, self.space.num_blocks)) < 0.5
        return np.where(take_a[..., None], a, b)

    def _offspring(self, taken: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        if not self.history:
            return super()._offspring(taken)
        parents = self._parents()
        picked = [(k, "mutation") for k in self._collect(lambda n: self.mutate(parents, n), self.mutations, taken)]
        picked += [(k, "crossover") for k in self._collect(lambda n: self.crossover(parents, n), self.crossovers, taken)]
        picked += [(k, "random") for k in self._random(self.population - len(picked), taken)] if len(picked) < self.population else []
        return picked


def make_strategy(name: str, space: SearchSpace, budgets: Sequence[Budget], *, rng: np.random.Generator, **options: Any) -> RandomSearch:
    """``evolution`` or ``random`` with keyword options (unknown ones are an error)."""
    cls = {"evolution": EvolutionSearch, "random": RandomSearch}.get(name)
    if cls is None:
        raise SpaceError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    try:
        return cls(space, budgets, rng=rng, **options)
    except TypeError as exc:
        raise SpaceError(f"bad option for the {name} strategy: {exc}") from None


__all__ = [
    "Budget",
    "EvolutionSearch",
    "FeasibleSampler",
    "RandomSearch",
    "STRATEGIES",
    "admits_all",
    "check_budgets",
    "display",
    "make_sampler",
    "make_strategy",
    "rng_state_from_json",
    "rng_state_to_json",
]
