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
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from spos_hw.errors import Infeasible, SpaceError
from spos_hw.nas.costs import Bound, admits_all, check_budgets
from spos_hw.nas.sampling import FeasibleSampler
from spos_hw.nas.space import SearchSpace
from spos_hw.rng import rng_state_from_json, rng_state_to_json

log = logging.getLogger(__name__)

STRATEGIES = ("evolution", "random")
ORIGINS = ("random", "mutation", "crossover")


# ----------------------------------------------------------------------------- strategies


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SpaceError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Strategy(ABC):
    """An ask/tell search over ``space`` under ``budgets``: the history is the cache and the state.

    Subclasses implement ``_offspring`` (one generation's new candidates); the base class keeps
    the history, never proposes an evaluated or over-budget architecture, and resumes exactly.

    Args:
        space: the search space.
        budgets: upper bounds every candidate meets before it is proposed.
        rng: the generator every proposal comes from (part of the state).
        population: candidates per generation.
        generations: evaluated generations.
        max_tries: proposals allowed per wanted candidate before a generation stops short.
        sampler: random candidates within the budgets (default ``FeasibleSampler``).
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        space: SearchSpace,
        budgets: Sequence[Bound],
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
        self.sampler = sampler if sampler is not None else FeasibleSampler(space, self.budgets, rng=rng)
        self.generation = 0
        self.exhausted = False
        self.history: list[dict[str, Any]] = []
        self._index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []

    # --- hyperparameters
    def config(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "population": self.population,
            "generations": self.generations,
            "max_tries": self.max_tries,
        }

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

    @abstractmethod
    def _offspring(self, taken: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        """The next generation's new candidates as ``(key, origin)``, their rows put in ``taken``."""

    def propose(self) -> tuple[np.ndarray, list[str]]:
        """The next generation's new candidates (``ArchBatch``) and their origins.

        Calling it again before ``tell`` proposes something else: the RNG has moved on.
        """
        if self.done:
            return np.zeros((0, self.space.num_blocks, 4), dtype=np.int64), []
        taken: dict[str, np.ndarray] = {}
        picked = self._offspring(taken)
        if not picked:
            log.warning(
                "no new architecture within the budgets could be found: the search stops at generation %d", self.generation
            )
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
            self.history.append(
                {"arch": str(arch), "score": float(h["score"]), "generation": int(h["generation"]), "origin": h["origin"]}
            )


class RandomSearch(Strategy):
    """The paper's baseline: ``generations`` x ``population`` random architectures within the budgets."""

    name = "random"

    def _offspring(self, taken: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        return [(k, "random") for k in self._random(self.population, taken)]


class EvolutionSearch(Strategy):
    """The SPOS evolutionary search (defaults: the paper's settings).

    Args:
        space, budgets, rng, population, generations, max_tries, sampler: as ``Strategy`` (keywords).
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
        budgets: Sequence[Bound],
        *,
        topk: int | None = None,
        mutations: int | None = None,
        crossovers: int | None = None,
        mutation_prob: float = 0.1,
        **common: Any,
    ) -> None:
        super().__init__(space, budgets, **common)
        self.topk = _positive_int("topk", max(1, self.population // 5) if topk is None else topk)
        self.mutations = _positive_int("mutations", self.population // 2 if mutations is None else mutations, 0)
        self.crossovers = _positive_int("crossovers", self.population // 2 if crossovers is None else crossovers, 0)
        if self.mutations + self.crossovers > self.population:
            raise SpaceError(
                f"mutations + crossovers ({self.mutations} + {self.crossovers}) cannot exceed the population ({self.population})"
            )
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
            return [(k, "random") for k in self._random(self.population, taken)]
        parents = self._parents()
        picked = [(k, "mutation") for k in self._collect(lambda n: self.mutate(parents, n), self.mutations, taken)]
        picked += [(k, "crossover") for k in self._collect(lambda n: self.crossover(parents, n), self.crossovers, taken)]
        picked += (
            [(k, "random") for k in self._random(self.population - len(picked), taken)] if len(picked) < self.population else []
        )
        return picked


def make_strategy(
    name: str, space: SearchSpace, budgets: Sequence[Bound], *, rng: np.random.Generator, **options: Any
) -> Strategy:
    """``evolution`` or ``random`` with keyword options (unknown ones are an error)."""
    cls = {"evolution": EvolutionSearch, "random": RandomSearch}.get(name)
    if cls is None:
        raise SpaceError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    try:
        return cls(space, budgets, rng=rng, **options)
    except TypeError as exc:
        raise SpaceError(f"bad option for the {name} strategy: {exc}") from None


__all__ = ["ORIGINS", "STRATEGIES", "EvolutionSearch", "RandomSearch", "Strategy", "make_strategy"]
