"""``search_supernet(config)``: what ``spos-hw search`` runs. It wires the trained supernet, its
dataset's held-out split and the cost models into a strategy, a scorer and the loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.io import file_sha256
from spos_hw.nas.config import SearchConfig
from spos_hw.nas.costs import budgets_from, builtin_costs
from spos_hw.nas.search.artifacts import report_search
from spos_hw.nas.search.loop import check_out, load_state, run_search
from spos_hw.nas.space import CostModel, SearchSpace

log = logging.getLogger(__name__)

CostModels = Callable[[SearchSpace], Mapping[str, CostModel]]


def search_supernet(config: SearchConfig, *, cost_models: CostModels = builtin_costs, progress: bool = True) -> dict[str, Any]:
    """Search a trained supernet under budgets (or, with ``config.report``, re-pick from a finished search).

    Candidates inherit the supernet's weights, get their BN statistics recalibrated on fixed
    training batches and are scored by top-1 on the held-out split rebuilt from the checkpoint;
    every candidate meets every budget before it is scored. Returns ``result.json``'s contents.

    Args:
        config: the search's options (see ``SearchConfig``).
        cost_models: prices the space's architectures by budget name (latency: from the api's table).
        progress: a progress bar over candidates (rank 0).
    """
    if config.report is not None:
        return report_search(config.report, config.budgets, cost_models=cost_models)
    import torch

    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.distributed import init_distributed, shutdown
    from spos_hw.nas.recalibrate import scorer_for_checkpoint
    from spos_hw.nas.strategy import make_strategy

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    dist = init_distributed(config.device)
    try:
        if dist.main:  # refuse a used folder before any work (other ranks never write)
            check_out(config.out, resume=config.resume, overwrite=config.overwrite)
        net, ckpt = load_supernet(config.supernet)
        space = net.space
        costs = cost_models(space)
        budgets = budgets_from(costs, config.budgets)
        strategy = make_strategy(
            config.strategy, space, budgets, rng=np.random.default_rng(config.seed), **config.strategy_options()
        )
        fp = file_sha256(config.supernet)[:16]
        record = {
            **strategy.config(),
            "seed": config.seed,
            "budgets": [b.to_json() for b in budgets],
            "space_fingerprint": space.fingerprint,
            "supernet_fingerprint": fp,
            "lut_fingerprint": file_sha256(config.lut)[:16] if config.lut is not None else None,
        }
        state_path = Path(config.out) / "state.json"
        if config.resume and state_path.is_file():  # refuse a mismatched resume before loading the data
            load_state(state_path, record, partial=True)
        scorer, scoring = scorer_for_checkpoint(
            net,
            ckpt,
            data=config.data,
            recal_images=config.recal_images,
            recal_batch_size=config.recal_batch_size,
            holdout=config.holdout,
            eval_batch_size=config.eval_batch_size,
            seed=config.seed,
            device=dist.device,
        )
        record = {**record, **scoring}
        if dist.main:
            log.info(
                "scoring: BN recalibrated on %d training images (batches of %d), top-1 on %d held-out images",
                scoring["recal_images"],
                scoring["recal_batch_size"],
                scoring["holdout_images"],
            )
        from spos_hw.nas.rank_check import find_rank_check

        rank = find_rank_check(config.supernet)
        meta = {
            "seed": config.seed,
            "supernet": {"path": str(config.supernet), "fingerprint": fp, "step": ckpt.get("step")},
            "lut": str(config.lut) if config.lut is not None else None,
            "data": scoring,
            "rank_check": None
            if rank is None
            else {**rank["by_accuracy"], "noise_ceiling_tau": (rank.get("noise_ceiling") or {}).get("tau")},
            "config": record,
        }
        result = run_search(
            strategy,
            scorer,
            costs=costs,
            out=config.out,
            meta=meta,
            resume=config.resume,
            overwrite=config.overwrite,
            progress=progress,
            dist=dist,
            checkpoint_s=config.checkpoint_s,
        )
        return result.summary
    finally:
        shutdown(dist)


__all__ = ["search_supernet"]
