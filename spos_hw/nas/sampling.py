"""Architecture sampling: uniform, and uniform-constrained as in the SPOS paper. No torch here.

Every sampler draws ``ArchBatch`` rows (``[n, num_blocks, 4]`` int arrays) from a
``numpy.random.Generator`` it owns, and has ``state_dict``/``load_state_dict`` so a resumed
run continues the same stream. Constraints pair any cost model (FLOPs, params, BitOps,
predicted latency: anything with ``cost(batch)``) with bounds.

``ConstrainedSampler`` follows the paper: pick one of ``bins`` equal bins of the first
constraint's range uniformly, then draw architectures until one lands in that bin and meets
every other constraint. Two ways to draw:

* ``rejection``: uniform proposals from the whole space (the paper). Narrow or extreme bins
  can need millions of proposals; the tries are bounded and running out is an ``Infeasible``
  naming the bin.
* ``exact`` (additive cost models only): a counting DP over blocks on a grid of the per-block
  costs proposes architectures uniformly from a superset of the bin, and proposals are
  accepted on their true cost. Rejection from a uniform superset is uniform on the bin, so
  this draws exactly the distribution the paper's loop draws, in a couple of proposals.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from spos_hw.errors import Infeasible, MissingDependency, SpaceError
from spos_hw.nas.space import CostModel, SearchSpace

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "rejection")
BUILTIN_COSTS = ("flops", "params", "bitops")
COST_NAMES = BUILTIN_COSTS + ("latency",)


def cost_model(space: SearchSpace, name: str, lut: str | None = None) -> CostModel:
    """A built-in cost model of ``space``, or the latency predictor compiled from ``lut``.

    The latency package is imported only here, and only for ``latency``: sampling, training and
    search work with any object that has ``cost(batch)``.
    """
    if name in BUILTIN_COSTS:
        return space.cost_model(name)
    if name != "latency":
        raise SpaceError(f"unknown cost model {name!r}; choose one of {', '.join(COST_NAMES)}")
    if not lut:
        raise SpaceError("a latency constraint needs a latency table: pass --lut lut.json (made by `spos-hw profile`)")
    try:
        from spos_hw.latency.predictor import load_predictor
    except ImportError:
        raise MissingDependency("the latency predictor (spos_hw.latency.predictor) is not available in this installation") from None
    return load_predictor(lut, space)


def _display(model: CostModel, lo: float, hi: float | None = None) -> str:
    """``290M..360M FLOPs`` style: values in the model's display scale, then its unit."""
    scale = float(getattr(model, "scale", 1.0) or 1.0)
    suffix = {1e6: "M", 1e9: "G", 1e3: "k"}.get(scale, "")
    text = f"{lo / scale:.4g}{suffix}" + ("" if hi is None else f"..{hi / scale:.4g}{suffix}")
    return f"{text} {getattr(model, 'unit', '')}".rstrip()


@dataclass(frozen=True)
class Constraint:
    """``lo <= model.cost(arch) <= hi`` (in the model's own unit: FLOPs, params, ms ...)."""

    model: CostModel
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise SpaceError(f"bad {self.name} range {self.lo}..{self.hi}: need finite LO <= HI")

    @classmethod
    def scaled(cls, model: CostModel, lo: float, hi: float) -> "Constraint":
        """Bounds in the model's display scale (``flops`` 290:360 means 290M..360M FLOPs)."""
        scale = float(getattr(model, "scale", 1.0) or 1.0)
        return cls(model, lo * scale, hi * scale)

    @property
    def name(self) -> str:
        return getattr(self.model, "name", type(self.model).__name__)

    def admits(self, batch: np.ndarray) -> np.ndarray:
        """Boolean mask over an ``ArchBatch``."""
        c = np.asarray(self.model.cost(batch))
        return (c >= self.lo) & (c <= self.hi)

    def describe(self) -> str:
        return f"{self.name} {_display(self.model, self.lo, self.hi)}"

    def to_json(self) -> dict[str, Any]:
        return {"cost": self.name, "lo": self.lo, "hi": self.hi, "unit": getattr(self.model, "unit", "")}


def admits_all(constraints: Sequence[Constraint], batch: np.ndarray) -> np.ndarray:
    mask = np.ones(np.asarray(batch).shape[0], dtype=bool)
    for c in constraints:
        mask &= c.admits(batch)
    return mask


def model_bounds(model: CostModel) -> tuple[float, float] | None:
    """Exact (min, max) of a cost model over the space, when it can tell."""
    bounds = getattr(model, "bounds", None)
    return tuple(map(float, bounds())) if callable(bounds) else None  # type: ignore[return-value]


def _is_additive(model: CostModel) -> bool:
    return hasattr(model, "per_block") and hasattr(model, "fixed") and hasattr(model, "table")


# ----------------------------------------------------------------------------- RNG state


def _encode(v: Any) -> Any:
    """PCG64 states hold 128-bit ints; checkpoints store ints as strings (weights_only-safe)."""
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, bool) or not isinstance(v, int):
        return v
    return {"int": str(v)}


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"int"}:
            return int(v["int"])
        return {k: _decode(x) for k, x in v.items()}
    return v


class _RngState:
    rng: np.random.Generator

    def state_dict(self) -> dict[str, Any]:
        return {"rng": _encode(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = _decode(state["rng"])


class Sampler(Protocol):
    def sample(self, n: int) -> np.ndarray: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class UniformSampler(_RngState):
    """Every architecture of the space with equal probability (the paper's unconstrained case)."""

    def __init__(self, space: SearchSpace, *, rng: np.random.Generator) -> None:
        self.space, self.rng = space, rng

    def sample(self, n: int = 1) -> np.ndarray:
        return self.space.sample(self.rng, n)

    def describe(self) -> dict[str, Any]:
        return {"kind": "uniform"}


# ----------------------------------------------------------------------------- exact DP


class AdditiveGrid:
    """Uniform proposals among architectures whose grid cost lies in a range, by a counting DP.

    Per-block costs are shifted to a minimum of 0 and floored onto a grid of step ``delta``:
    ``k[i, j] = floor((c[i, j] - min_j c[i, j]) / delta)``. With ``S`` the true shifted cost and
    ``K`` the grid cost, ``K * delta <= S < (K + num_blocks) * delta``, so the grid range
    ``[floor(a/delta) - num_blocks - 1, floor(b/delta) + 1]`` covers every architecture with
    ``a <= S <= b`` (the extra 1 on each side absorbs float rounding). ``counts[i, t]`` is the
    number of ways blocks ``i..`` sum to grid cost ``t``; drawing the total and then each block
    backwards from the counts is uniform over the grid range.

    Choices the space does not allow at a block (``SearchSpace.choice_mask``) are neither
    counted nor proposed.
    """

    def __init__(self, model: CostModel, space: SearchSpace, delta: float) -> None:
        table_shape = tuple(np.asarray(model.table).shape[1:])
        if table_shape != tuple(space.sizes):
            raise SpaceError(f"cost model {getattr(model, 'name', '?')!r} has choice shape {table_shape}, space {space.name!r} has {space.sizes}")
        pb = np.asarray(model.per_block, dtype=np.float64)
        self.allowed = space.choice_mask().reshape(pb.shape[0], -1)
        self.shape = table_shape
        self.num_blocks = pb.shape[0]
        lo = np.where(self.allowed, pb, np.inf).min(axis=1, keepdims=True)
        self.base = float(model.fixed) + float(lo.sum())
        self.delta = float(delta)
        self.k = np.floor(np.where(self.allowed, pb - lo, 0.0) / self.delta).astype(np.int64)
        kmax = int(np.where(self.allowed, self.k, 0).max(axis=1).sum())
        counts = np.zeros((self.num_blocks + 1, kmax + 1), dtype=np.float64)
        counts[self.num_blocks, 0] = 1.0
        for i in range(self.num_blocks - 1, -1, -1):
            ki = self.k[i][self.allowed[i]]
            for kij in np.unique(ki):
                mult = float(np.count_nonzero(ki == kij))
                counts[i, kij:] += mult * counts[i + 1, : kmax + 1 - kij]
        self.counts = counts  # float64: up to ~1e308 ways, relative error ~1e-16
        self.kmax = kmax

    def grid_range(self, lo: float, hi: float) -> tuple[int, int]:
        """Grid costs that cover every architecture with true cost in ``[lo, hi]``."""
        a = (lo - self.base) / self.delta
        b = (hi - self.base) / self.delta
        klo = max(0, math.floor(a) - self.num_blocks - 1)
        khi = min(self.kmax, math.floor(b) + 1)
        return klo, khi

    def count(self, lo: float, hi: float) -> float:
        klo, khi = self.grid_range(lo, hi)
        return float(self.counts[0, klo : khi + 1].sum()) if khi >= klo else 0.0

    def propose(self, rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
        """``n`` architectures drawn uniformly among those with grid cost in the range of ``[lo, hi]``."""
        klo, khi = self.grid_range(lo, hi)
        w = self.counts[0, klo : khi + 1]
        total = np.cumsum(w)
        t = klo + np.searchsorted(total, rng.random(n) * total[-1], side="right")
        t = np.minimum(t, khi)
        flat = np.empty((n, self.num_blocks), dtype=np.int64)
        for i in range(self.num_blocks):
            rest = t[:, None] - self.k[i][None, :]  # [n, choices]
            ok = (rest >= 0) & self.allowed[i][None, :]
            weights = np.where(ok, self.counts[i + 1][np.where(ok, rest, 0)], 0.0)
            cum = np.cumsum(weights, axis=1)
            u = rng.random(n) * cum[:, -1]
            j = (cum <= u[:, None]).sum(axis=1)
            j = np.minimum(j, weights.shape[1] - 1)
            flat[:, i] = j
            t = t - self.k[i][j]
        batch = np.zeros((n, self.num_blocks, 4), dtype=np.int64)
        for d, idx in enumerate(np.unravel_index(flat, self.shape)):
            batch[..., d] = idx
        return batch


# ----------------------------------------------------------------------------- constrained


class ConstrainedSampler(_RngState):
    """The paper's uniform-constrained sampling over one or more constraints.

    Args:
        space: the search space.
        constraints: the first one is binned; the others are checked on every draw.
        rng: the generator every draw comes from (its state is the sampler's state).
        bins: number of equal bins of the first constraint's achievable range (paper: 7).
        method: ``exact`` (DP proposals, additive first constraint), ``rejection`` (uniform
            proposals, the paper), or ``auto`` (exact when possible).
        max_tries: proposals per draw before ``Infeasible`` is raised for the chosen bin.
        grid_cap: largest grid the exact method builds (memory ``num_blocks x grid_cap`` floats).
    """

    def __init__(
        self,
        space: SearchSpace,
        constraints: Sequence[Constraint],
        *,
        rng: np.random.Generator,
        bins: int = 7,
        method: str = "auto",
        max_tries: int = 100_000,
        grid_cap: int = 200_000,
    ) -> None:
        if not constraints:
            raise SpaceError("ConstrainedSampler needs at least one constraint (use UniformSampler otherwise)")
        if not isinstance(bins, int) or bins < 1:
            raise SpaceError(f"bins must be a positive integer, got {bins!r}")
        if method not in METHODS:
            raise SpaceError(f"unknown sampling method {method!r}; choose one of {', '.join(METHODS)}")
        if max_tries < 1:
            raise SpaceError(f"max_tries must be >= 1, got {max_tries}")
        self.space, self.rng = space, rng
        self.constraints = tuple(constraints)
        self.max_tries = int(max_tries)
        primary = self.constraints[0]
        for c in self.constraints:
            b = model_bounds(c.model)
            if b is not None and (c.hi < b[0] or c.lo > b[1]):
                raise Infeasible(
                    f"{c.describe()} is outside the achievable range {_display(c.model, *b)} of space {space.name!r}"
                )
        bounds = model_bounds(primary.model)
        lo, hi = (max(primary.lo, bounds[0]), min(primary.hi, bounds[1])) if bounds else (primary.lo, primary.hi)
        bins = 1 if hi <= lo else bins
        self.edges = np.linspace(lo, hi, bins + 1)
        additive = _is_additive(primary.model)
        if method == "exact" and not additive:
            raise SpaceError(f"exact sampling needs an additive cost model; {primary.name!r} is not (use rejection)")
        self.method = "exact" if method == "exact" or (method == "auto" and additive) else "rejection"
        self.grid: AdditiveGrid | None = None
        self.live_bins = list(range(bins))
        if self.method == "exact":
            width = (hi - lo) / bins if hi > lo else max(abs(hi), 1.0) * 1e-9
            span = bounds[1] - bounds[0] if bounds else hi - lo
            delta = max(width / (4 * space.num_blocks), span / grid_cap, 1e-300)
            self.grid = AdditiveGrid(primary.model, space, delta)
            self.live_bins = [b for b in range(bins) if self.grid.count(*self.bin(b)) > 0]
            if not self.live_bins:
                raise Infeasible(f"no architecture of space {space.name!r} has {primary.describe()}")
            if len(self.live_bins) < bins:
                log.info("constrained sampling: %d of %d bins hold no architecture and are skipped", bins - len(self.live_bins), bins)

    def bin(self, b: int) -> tuple[float, float]:
        return float(self.edges[b]), float(self.edges[b + 1])

    def _describe_bin(self, b: int) -> str:
        lo, hi = self.bin(b)
        model = self.constraints[0].model
        return f"bin {b + 1}/{len(self.edges) - 1} ({_display(model, lo, hi)})"

    def _in_bin(self, batch: np.ndarray, b: int) -> np.ndarray:
        lo, hi = self.bin(b)
        c = np.asarray(self.constraints[0].model.cost(batch))
        last = b == len(self.edges) - 2
        ok = (c >= lo) & ((c <= hi) if last else (c < hi))
        for con in self.constraints[1:]:
            ok &= con.admits(batch)
        return ok

    def _propose(self, b: int, n: int) -> np.ndarray:
        if self.grid is not None:
            return self.grid.propose(self.rng, n, *self.bin(b))
        return self.space.sample(self.rng, n)

    def _draw(self, b: int, m: int) -> np.ndarray:
        """``m`` independent draws from bin ``b`` (at most ``max_tries`` proposals per draw)."""
        found: list[np.ndarray] = []
        have, tried, budget = 0, 0, self.max_tries * m
        chunk = max(16, 2 * m) if self.method == "exact" else 256
        while have < m and tried < budget:
            props = self._propose(b, min(chunk, budget - tried))
            tried += len(props)
            hit = props[self._in_bin(props, b)][: m - have]
            found.append(hit)
            have += len(hit)
            chunk = min(chunk * 4, 4096)
        if have < m:
            extra = f" and {', '.join(c.describe() for c in self.constraints[1:])}" if len(self.constraints) > 1 else ""
            hint = "" if self.method == "exact" else "; exact sampling (additive cost models) avoids long rejection loops"
            raise Infeasible(f"no architecture found in {self._describe_bin(b)}{extra} after {tried} proposals{hint}")
        return np.concatenate(found)

    def sample(self, n: int = 1) -> np.ndarray:
        """``n`` architectures, each from a uniformly chosen bin, as an ``ArchBatch``."""
        out = np.empty((n, self.space.num_blocks, 4), dtype=np.int64)
        picks = np.asarray(self.live_bins)[self.rng.integers(len(self.live_bins), size=n)]
        for b in np.unique(picks):
            where = np.flatnonzero(picks == b)
            out[where] = self._draw(int(b), len(where))
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "constrained",
            "method": self.method,
            "constraints": [c.to_json() for c in self.constraints],
            "bins": [list(self.bin(b)) for b in range(len(self.edges) - 1)],
            "live_bins": list(self.live_bins),
        }


def make_sampler(
    space: SearchSpace,
    constraints: Sequence[Constraint] = (),
    *,
    rng: np.random.Generator,
    bins: int = 7,
    method: str = "auto",
    max_tries: int = 100_000,
) -> UniformSampler | ConstrainedSampler:
    """Uniform when there are no constraints, uniform-constrained otherwise."""
    if not constraints:
        return UniformSampler(space, rng=rng)
    return ConstrainedSampler(space, constraints, rng=rng, bins=bins, method=method, max_tries=max_tries)


__all__ = [
    "COST_NAMES",
    "AdditiveGrid",
    "Constraint",
    "ConstrainedSampler",
    "Sampler",
    "UniformSampler",
    "admits_all",
    "cost_model",
    "make_sampler",
    "model_bounds",
]
