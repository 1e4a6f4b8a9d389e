"""Calibration: which whole subnets to measure, and the fit from table sums to measured latency.

A block table's sum differs from a whole network's latency by per-call overhead (each block
was its own session call), by cache state (a block timed alone keeps its weights hot) and by
what the runtime does across block boundaries. The fit is *affine* in the table sum
(``measured = slope * sum + intercept``), so the calibrated predictor is still an
``AdditiveCost``: exact uniform-in-bin sampling and vectorized search keep working.

Subnets are chosen before measuring, spread evenly over the space's FLOPs range (both extremes
included), so the slope is pinned down by the whole range rather than by the narrow middle
where uniformly random architectures concentrate.
"""

from __future__ import annotations

import numpy as np

from spos_hw.errors import SposHwError
from spos_hw.nas.space import Arch, SearchSpace

MODEL = "affine"


def calibration_archs(space: SearchSpace, k: int, rng: np.random.Generator) -> list[Arch]:
    """``k`` distinct architectures spread over the FLOPs range (extremes first when ``k >= 2``)."""
    if k <= 0:
        return []
    cost = space.flops
    allowed = cost.allowed  # [blocks, choices]: only choices the space allows at each block
    per_block = np.where(allowed, cost.per_block, 0.0)
    flat_sizes = space.sizes
    pool = [space.sample(rng, 512)]
    # Tilted draws reach the tails: choice probability ~ exp(beta * standardized block cost).
    n_ok = allowed.sum(axis=1, keepdims=True)
    mean = per_block.sum(axis=1, keepdims=True) / n_ok
    std = np.sqrt((np.where(allowed, per_block - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / n_ok)
    z = (per_block - mean) / (std + 1e-12)
    for beta in np.linspace(-4.0, 4.0, 17):
        p = np.where(allowed, np.exp(beta * z), 0.0)
        p /= p.sum(axis=1, keepdims=True)
        picks = np.stack([rng.choice(p.shape[1], size=64, p=p[b]) for b in range(p.shape[0])], axis=1)
        pool.append(_unflatten(picks, flat_sizes))
    lo = _unflatten(np.where(allowed, per_block, np.inf).argmin(axis=1)[None], flat_sizes)
    hi = _unflatten(np.where(allowed, per_block, -np.inf).argmax(axis=1)[None], flat_sizes)
    batch = np.concatenate([lo, hi] + pool)
    batch = np.unique(batch, axis=0)
    values = cost.cost(batch)
    chosen: list[int] = []
    if k == 1:
        chosen = [int(np.argmin(np.abs(values - np.median(values))))]
    else:
        for target in np.linspace(values.min(), values.max(), k):
            order = np.argsort(np.abs(values - target))
            chosen.append(int(next(i for i in order if i not in chosen)))
    return space.decode(batch[sorted(chosen, key=lambda i: values[i])])


def _unflatten(flat: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Per-block flat choice indices ``[n, blocks]`` -> an ``ArchBatch`` ``[n, blocks, 4]``."""
    return np.stack(np.unravel_index(flat, sizes), axis=-1).astype(np.int64)


def fit(table_ms: np.ndarray, measured_ms: np.ndarray, *, domain: tuple[float, float] | None = None) -> dict:
    """Fit ``measured = slope * table + intercept`` (scikit-learn HuberRegressor, robust to one bad run).

    One subnet only fixes a ratio (intercept 0); none gives the identity. A fit that falls as
    work grows, or predicts a non-positive latency anywhere on ``domain`` (the space's range of
    table sums; default: the measured ones), is noise, not a model: the ratio is kept instead.
    """
    x = np.asarray(table_ms, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    if x.shape != y.shape:
        raise SposHwError("calibration needs one measured latency per table sum")
    if x.size == 0:
        slope, intercept, how = 1.0, 0.0, "none (no calibration subnets)"
    elif x.size == 1 or np.ptp(x) <= 1e-9 * max(abs(x.mean()), 1e-12):
        slope, intercept, how = float(y.mean() / x.mean()), 0.0, "ratio"
    elif x.size < 4:
        from sklearn.linear_model import LinearRegression

        reg = LinearRegression().fit(x[:, None], y)
        slope, intercept, how = float(reg.coef_[0]), float(reg.intercept_), "sklearn.linear_model.LinearRegression"
    else:
        from sklearn.linear_model import HuberRegressor

        # Centre and scale so Huber's threshold is in units of the residual spread.
        mx, sx = x.mean(), x.std()
        reg = HuberRegressor(alpha=0.0, epsilon=1.5, max_iter=1000).fit(((x - mx) / sx)[:, None], y)
        slope = float(reg.coef_[0] / sx)
        intercept = float(reg.intercept_ - slope * mx)
        how = "sklearn.linear_model.HuberRegressor"
    edges = np.asarray(domain if domain is not None else x, dtype=np.float64)
    if x.size > 1 and (slope <= 0 or np.any(slope * np.append(edges, x) + intercept <= 0)):
        slope, intercept, how = float(y.mean() / x.mean()), 0.0, f"ratio (the affine fit was not increasing and positive: {how})"
    pred = slope * x + intercept
    out = {"model": MODEL, "slope": slope, "intercept": intercept, "fitted_with": how, "n": int(x.size)}
    if x.size:
        err = np.abs(pred - y) / y
        out["in_sample_mape"] = float(err.mean() * 100)
        out["in_sample_max_error_pct"] = float(err.max() * 100)
    return out


__all__ = ["MODEL", "calibration_archs", "fit"]
