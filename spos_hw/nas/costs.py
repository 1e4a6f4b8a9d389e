"""Bounded costs: one type for search budgets and sampling constraints, and its helpers. No torch.

A cost model is anything with ``cost(batch) -> ndarray`` (``nas.space.CostModel``): FLOPs,
params, BitOps, predicted latency. A ``Bound`` pairs one with an admissible range
``lo <= cost <= hi`` in the model's own unit; either end may be open. A search budget is an
upper bound (``Bound.upper``); a training constraint is usually two-sided (a paper-style FLOPs
range), its open ends closed by the model's exact bounds (``Bound.closed``).

Values are shown in the model's display scale (``scale``: ``330M FLOPs``, ``1.25 ms``) by
``display``; ``BUDGET_FLAGS`` maps each budget kind to its CLI flag and result key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from spos_hw.errors import ConfigError, Infeasible, SpaceError
from spos_hw.nas.space import CostModel, SearchSpace

BUILTIN_COSTS = ("flops", "params", "bitops")
COST_NAMES = (*BUILTIN_COSTS, "latency")
BUDGET_FLAGS = {
    "latency": ("--latency-ms", "latency_ms"),
    "flops": ("--flops-m", "flops"),
    "params": ("--params-m", "params"),
    "bitops": ("--bitops-g", "bitops"),
}
"""Budget kinds: the CLI flag and the result.json key of each."""

_SUFFIX = {1e3: "k", 1e6: "M", 1e9: "G"}


# ----------------------------------------------------------------------------- cost models


def scale_of(model: CostModel) -> float:
    """The model's display scale (``1e6``: values are shown and given in millions)."""
    return float(getattr(model, "scale", 1.0) or 1.0)


def name_of(model: CostModel) -> str:
    return getattr(model, "name", type(model).__name__)


def display(model: CostModel, value: float, hi: float | None = None) -> str:
    """``330M FLOPs`` (a value, 6 significant digits) or ``290M..360M FLOPs`` (a range, 4)."""
    scale = scale_of(model)
    suffix = _SUFFIX.get(scale, "")
    if hi is None:
        text = f"{value / scale:.6g}{suffix}"
    else:
        text = f"{value / scale:.4g}{suffix}..{hi / scale:.4g}{suffix}"
    return f"{text} {getattr(model, 'unit', '')}".rstrip()


def bounds_of(model: CostModel) -> tuple[float, float] | None:
    """Exact (min, max) of a cost model over its space, when it can tell."""
    fn = getattr(model, "bounds", None)
    return tuple(map(float, fn())) if callable(fn) else None  # type: ignore[return-value]


def is_additive(model: CostModel) -> bool:
    """Whether the model is ``fixed + sum of per-block table entries`` (exact sampling, joint checks)."""
    return hasattr(model, "per_block") and hasattr(model, "fixed") and hasattr(model, "table")


def builtin_costs(space: SearchSpace) -> dict[str, CostModel]:
    """FLOPs, params and BitOps of ``space`` (latency needs a table: ``spos_hw.api.cost_models``)."""
    return {name: space.cost_model(name) for name in BUILTIN_COSTS}


def pick_cost(costs: Mapping[str, CostModel], name: str) -> CostModel:
    """``costs[name]``, with the errors a user needs: an unknown name, or latency without a table."""
    if name in costs:
        return costs[name]
    if name == "latency":
        raise SpaceError("a latency bound needs a latency table: pass --lut lut.json (made by `spos-hw profile`)")
    raise SpaceError(f"unknown cost model {name!r}; choose one of {', '.join(COST_NAMES)}")


# ----------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Bound:
    """``lo <= model.cost(arch) <= hi`` in the model's own unit (FLOPs, params, ms ...).

    ``None`` leaves an end open (both open: the model's whole range, once ``closed``). Every
    cost here is positive, so an upper end must be > 0.
    """

    model: CostModel
    lo: float | None = None
    hi: float | None = None

    def __post_init__(self) -> None:
        for end in (self.lo, self.hi):
            if end is not None and not math.isfinite(end):
                raise SpaceError(f"bad {self.name} range {self.lo}..{self.hi}: need finite LO <= HI")
        if self.lo is not None and self.hi is not None and self.lo > self.hi:
            raise SpaceError(f"bad {self.name} range {self.lo}..{self.hi}: need finite LO <= HI")
        if self.lo is None and self.hi is not None and self.hi <= 0:
            raise SpaceError(f"the {self.name} budget must be a positive number, got {self.hi}")

    @classmethod
    def upper(cls, model: CostModel, limit: float) -> Bound:
        """A budget: ``cost <= limit`` (model units)."""
        return cls(model, None, float(limit))

    @classmethod
    def scaled(cls, model: CostModel, lo: float | None, hi: float | None) -> Bound:
        """Ends in the model's display scale: ``Bound.scaled(space.flops, 290, 360)`` is 290M..360M FLOPs."""
        s = scale_of(model)
        return cls(model, None if lo is None else float(lo) * s, None if hi is None else float(hi) * s)

    @property
    def name(self) -> str:
        return name_of(self.model)

    @property
    def limit(self) -> float:
        """The upper end (a budget's limit); ``inf`` when open."""
        return math.inf if self.hi is None else self.hi

    def closed(self) -> Bound:
        """Both ends given; an open end becomes the model's exact bound."""
        if self.lo is not None and self.hi is not None:
            return self
        b = bounds_of(self.model)
        if b is None:
            raise ConfigError(f"the {self.name} cost model cannot tell its bounds: give both ends of --range")
        return replace(self, lo=b[0] if self.lo is None else self.lo, hi=b[1] if self.hi is None else self.hi)

    def admits(self, batch: np.ndarray) -> np.ndarray:
        """Boolean mask over an ``ArchBatch``."""
        c = np.asarray(self.model.cost(batch))
        ok = np.ones(c.shape, dtype=bool)
        if self.lo is not None:
            ok &= c >= self.lo
        if self.hi is not None:
            ok &= c <= self.hi
        return ok

    def describe(self) -> str:
        if self.lo is None and self.hi is None:
            return f"{self.name} (any)"
        if self.lo is None:
            return f"{self.name} <= {display(self.model, self.limit)}"
        if self.hi is None:
            return f"{self.name} >= {display(self.model, self.lo)}"
        return f"{self.name} {display(self.model, self.lo, self.hi)}"

    def to_json(self) -> dict[str, Any]:
        """A budget as ``{cost, limit, unit, scale}``; a range as ``{cost, lo, hi, unit}`` (the artifact formats)."""
        unit = getattr(self.model, "unit", "")
        if self.lo is None:
            return {"cost": self.name, "limit": self.hi, "unit": unit, "scale": scale_of(self.model)}
        return {"cost": self.name, "lo": self.lo, "hi": self.hi, "unit": unit}


def admits_all(bounds: Sequence[Bound], batch: np.ndarray) -> np.ndarray:
    """Boolean mask over an ``ArchBatch``: which rows meet every bound."""
    mask = np.ones(np.asarray(batch).shape[0], dtype=bool)
    for b in bounds:
        mask &= b.admits(batch)
    return mask


def budgets_from(costs: Mapping[str, CostModel], values: Mapping[str, float | None]) -> list[Bound]:
    """Budgets from display-scale values (``{"flops": 330}`` is 330M FLOPs); ``None`` means no budget."""
    out = []
    for name, value in values.items():
        if value is None:
            continue
        if name not in BUDGET_FLAGS:
            raise SpaceError(f"unknown budget {name!r}; choose from {', '.join(BUDGET_FLAGS)}")
        if name not in costs:
            raise SpaceError(f"{BUDGET_FLAGS[name][0]} needs a latency table: pass --lut lut.json (made by `spos-hw profile`)")
        out.append(Bound.upper(costs[name], float(value) * scale_of(costs[name])))
    if not out:
        raise SpaceError("give at least one budget: " + ", ".join(f[0] for f in BUDGET_FLAGS.values()))
    return out


def _rows_from_flat(space: SearchSpace, flat: np.ndarray) -> np.ndarray:
    batch = np.zeros(flat.shape + (4,), dtype=np.int64)
    for d, idx in enumerate(np.unravel_index(flat, space.sizes)):
        batch[..., d] = idx
    return batch


def check_budgets(space: SearchSpace, budgets: Sequence[Bound]) -> np.ndarray:
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
        bounds = bounds_of(b.model)
        if bounds is not None:
            minima.append(f"{b.name} {display(b.model, bounds[0])}")
            if bounds[0] > b.limit:
                raise Infeasible(
                    f"no architecture of space {space.name!r} meets {b.describe()}: "
                    f"the achievable minimum is {display(b.model, bounds[0])}"
                )
    n_choices = int(np.prod(space.sizes))
    if not all(is_additive(b.model) and np.shape(b.model.per_block) == (space.num_blocks, n_choices) for b in budgets):
        return np.zeros((0, space.num_blocks, 4), dtype=np.int64)
    tables = [np.asarray(b.model.per_block, dtype=np.float64) for b in budgets]
    fixed = np.array([float(b.model.fixed) for b in budgets])
    limits = np.array([b.limit for b in budgets])
    allowed = space.choice_mask().reshape(space.num_blocks, -1)  # choices a block does not allow are never minimizers
    norm = np.stack([np.where(allowed, t, 0.0) / lim for t, lim in zip(tables, limits)])  # [k, blocks, choices]
    k = len(budgets)
    spread = np.random.default_rng(0).dirichlet(np.ones(k), 62)  # a fixed set of weightings, not the search's RNG
    weights = np.concatenate([np.eye(k), np.full((1, k), 1.0 / k), spread])
    combined = np.where(allowed[None], np.einsum("wk,kbc->wbc", weights, norm), np.inf)  # [w, blocks, choices]
    lower = weights @ (fixed / limits) + combined.min(axis=2).sum(axis=1)
    if np.any(lower > weights.sum(axis=1) * (1 + 1e-12)):
        raise Infeasible(
            f"no architecture of space {space.name!r} meets {' and '.join(b.describe() for b in budgets)} at once "
            f"(each alone is achievable: minimum {', '.join(minima)})"
        )
    witnesses = _rows_from_flat(space, combined.argmin(axis=2))
    return witnesses[admits_all(budgets, witnesses)]


__all__ = [
    "BUDGET_FLAGS",
    "BUILTIN_COSTS",
    "COST_NAMES",
    "Bound",
    "admits_all",
    "bounds_of",
    "budgets_from",
    "builtin_costs",
    "check_budgets",
    "display",
    "is_additive",
    "name_of",
    "pick_cost",
    "scale_of",
]
