"""Architecture sampling: uniform, and uniform-constrained as in the SPOS paper. No torch here.

Every sampler draws ``ArchBatch`` rows (``[n, num_blocks, 4]`` int arrays) from a
``numpy.random.Generator`` it owns, and has ``state_dict``/``load_state_dict`` so a resumed
run continues the same stream. Constraints are ``nas.costs.Bound``s over any cost model (FLOPs,
params, BitOps, predicted latency: anything with ``cost(batch)``).

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
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from spos_hw.errors import Infeasible, SpaceError
from spos_hw.nas.costs import Bound, admits_all, bounds_of, display, is_additive
from spos_hw.nas.space import CostModel, SearchSpace
from spos_hw.rng import rng_state_from_json, rng_state_to_json

log = logging.getLogger(__name__)

METHODS = ("auto", "exact", "rejection")


class _RngState:
    rng: np.random.Generator

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state_to_json(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        rng_state_from_json(self.rng, state["rng"])


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
            raise SpaceError(
                f"cost model {getattr(model, 'name', '?')!r} has choice shape {table_shape}, space {space.name!r} has {space.sizes}"
            )
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
        constraints: bounds on cost models; the first one is binned, the others are checked on
            every draw. Open ends are closed by the model's exact bounds.
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
        constraints: Sequence[Bound],
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
        self.constraints = tuple(c.closed() for c in constraints)
        self.max_tries = int(max_tries)
        primary = self.constraints[0]
        for c in self.constraints:
            b = bounds_of(c.model)
            if b is not None and (c.hi < b[0] or c.lo > b[1]):
                raise Infeasible(f"{c.describe()} is outside the achievable range {display(c.model, *b)} of space {space.name!r}")
        bounds = bounds_of(primary.model)
        lo, hi = (max(primary.lo, bounds[0]), min(primary.hi, bounds[1])) if bounds else (primary.lo, primary.hi)
        bins = 1 if hi <= lo else bins
        self.edges = np.linspace(lo, hi, bins + 1)
        additive = is_additive(primary.model)
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
                log.info(
                    "constrained sampling: %d of %d bins hold no architecture and are skipped", bins - len(self.live_bins), bins
                )
        if len(self.constraints) > 1:
            self.live_bins = self._jointly_feasible(self.live_bins)

    def _jointly_feasible(self, bins: list[int]) -> list[int]:
        """The bins where some architecture also meets every other constraint, found before training.

        A bin can hold architectures of the first constraint and still none that meets the others;
        drawing from it mid-training would fail, and a resumed run would repeat the same failing
        draw. Each bin is probed once with a private generator (the sampler's stream is untouched):
        a bin whose ``max_tries`` proposals find nothing is left out.
        """
        probe = np.random.default_rng(0x5B1)
        live = []
        for b in bins:
            try:
                self._draw(b, 1, probe)
            except Infeasible:
                log.info("constrained sampling: %s holds nothing that meets every constraint; skipped", self._describe_bin(b))
                continue
            live.append(b)
        if not live:
            ranges = ", ".join(
                f"{c.name} {display(c.model, *bounds_of(c.model))}" for c in self.constraints if bounds_of(c.model)
            )
            raise Infeasible(
                f"no architecture of space {self.space.name!r} meets {' and '.join(c.describe() for c in self.constraints)} "
                f"at once (achievable alone: {ranges})"
            )
        return live

    def bin(self, b: int) -> tuple[float, float]:
        return float(self.edges[b]), float(self.edges[b + 1])

    def _describe_bin(self, b: int) -> str:
        lo, hi = self.bin(b)
        model = self.constraints[0].model
        return f"bin {b + 1}/{len(self.edges) - 1} ({display(model, lo, hi)})"

    def _in_bin(self, batch: np.ndarray, b: int) -> np.ndarray:
        lo, hi = self.bin(b)
        c = np.asarray(self.constraints[0].model.cost(batch))
        last = b == len(self.edges) - 2
        ok = (c >= lo) & ((c <= hi) if last else (c < hi))
        for con in self.constraints[1:]:
            ok &= con.admits(batch)
        return ok

    def _propose(self, b: int, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.grid is not None:
            return self.grid.propose(rng, n, *self.bin(b))
        return self.space.sample(rng, n)

    def _draw(self, b: int, m: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """``m`` independent draws from bin ``b`` (at most ``max_tries`` proposals per draw)."""
        rng = self.rng if rng is None else rng
        found: list[np.ndarray] = []
        have, tried, budget = 0, 0, self.max_tries * m
        chunk = max(16, 2 * m) if self.method == "exact" else 256
        while have < m and tried < budget:
            props = self._propose(b, min(chunk, budget - tried), rng)
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

    def draw_bin(self, b: int, n: int = 1) -> np.ndarray:
        """``n`` architectures drawn uniformly from bin ``b`` (cost-stratified sets: rank checks)."""
        if b not in self.live_bins:
            raise Infeasible(f"{self._describe_bin(b) if 0 <= b < len(self.edges) - 1 else f'bin {b}'} holds no architecture")
        return self._draw(b, n)

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


class FeasibleSampler:
    """Uniform architectures among those meeting every bound, by bounded rejection (search's random candidates).

    Proposals are uniform over the whole space; each returned row meets every bound (the
    distribution the official search's random candidates have). After ``max_tries``
    proposals without enough hits it raises ``Infeasible`` with the smallest costs seen.
    """

    def __init__(
        self, space: SearchSpace, bounds: Sequence[Bound], *, rng: np.random.Generator, max_tries: int = 200_000
    ) -> None:
        self.space, self.bounds, self.rng, self.max_tries = space, tuple(bounds), rng, int(max_tries)

    def sample(self, n: int) -> np.ndarray:
        out: list[np.ndarray] = []
        tried, chunk = 0, 256
        best = {b.name: math.inf for b in self.bounds}
        while sum(len(o) for o in out) < n and tried < self.max_tries:
            props = self.space.sample(self.rng, min(chunk, self.max_tries - tried))
            tried += len(props)
            for b in self.bounds:
                best[b.name] = min(best[b.name], float(np.min(b.model.cost(props))))
            out.append(props[admits_all(self.bounds, props)])
            chunk = min(chunk * 2, 8192)
        rows = np.concatenate(out) if out else np.zeros((0, self.space.num_blocks, 4), dtype=np.int64)
        if len(rows) < n:
            seen = ", ".join(f"{b.name} {display(b.model, best[b.name])}" for b in self.bounds)
            raise Infeasible(
                f"found {len(rows)} of {n} architectures meeting {' and '.join(b.describe() for b in self.bounds)} "
                f"in {tried} random tries (smallest seen: {seen}); loosen the budgets"
            )
        return rows[:n]


def make_path_sampler(
    space: SearchSpace,
    constraints: Sequence[Bound] = (),
    *,
    rng: np.random.Generator,
    bins: int = 7,
    method: str = "auto",
    max_tries: int = 100_000,
) -> UniformSampler | ConstrainedSampler:
    """The path sampler of supernet training: uniform without constraints, uniform-constrained otherwise."""
    if not constraints:
        return UniformSampler(space, rng=rng)
    return ConstrainedSampler(space, constraints, rng=rng, bins=bins, method=method, max_tries=max_tries)


__all__ = [
    "METHODS",
    "AdditiveGrid",
    "ConstrainedSampler",
    "FeasibleSampler",
    "Sampler",
    "UniformSampler",
    "make_path_sampler",
]
