"""Distributed search: 2 gloo processes on CPU give exactly the single-process result."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest
import torch

from spos_hw.nas.costs import Bound
from spos_hw.nas.recalibrate import ScoringData, SupernetScorer
from spos_hw.nas.search import run_search
from spos_hw.nas.spaces import get_space
from spos_hw.nas.strategy import EvolutionSearch
from spos_hw.nas.supernet import Supernet

SPACE_NAME = "shufflenetv2-small:size=8"
QUANT_SPACE = "shufflenetv2-small-w48a8:size=8"  # per-tensor activation quantizers, never initialised
OPTS = dict(population=6, topk=2, mutations=2, crossovers=2, generations=3)


def _search(out, dist=None, space_name=SPACE_NAME):
    """The same seeded supernet, data and strategy in every process."""
    torch.set_num_threads(1)
    space = get_space(space_name)
    torch.manual_seed(0)
    net = Supernet(space)
    g = torch.Generator().manual_seed(1)
    recal = [torch.randn(32, *space.input_shape, generator=g) for _ in range(2)]
    hx, hy = torch.randn(64, *space.input_shape, generator=g), torch.randint(0, 10, (64,), generator=g)
    scorer = SupernetScorer(net, ScoringData.build(recal, [(hx, hy)]))
    lo, hi = space.flops.bounds()
    strategy = EvolutionSearch(space, [Bound.upper(space.flops, (lo + hi) / 2)], rng=np.random.default_rng(5), **OPTS)
    costs = {"flops": space.flops, "params": space.params}
    calls = []

    def counted(batch):
        calls.append(len(batch))
        return scorer(batch)

    res = run_search(strategy, counted, costs=costs, out=out, meta={"config": {"seed": 5}}, dist=dist, plots=False)
    return res, sum(calls)


def _worker(rank, world, port, tmp, space_name=SPACE_NAME):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    from spos_hw.nas.distributed import init_distributed, shutdown

    dist = init_distributed("cpu")
    try:
        res, scored = _search(os.path.join(tmp, f"rank{rank}"), dist, space_name)
        with open(os.path.join(tmp, f"summary{rank}.json"), "w") as fh:
            json.dump({"entries": [(e["arch"], e["score"], e["origin"]) for e in res.entries], "scored": scored}, fh)
    finally:
        shutdown(dist)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("space_name", [SPACE_NAME, QUANT_SPACE], ids=["float", "uninitialised-quantizers"])
def test_two_gloo_ranks_match_one_process(tmp_path, space_name):
    """Quantizers that initialise on first use must do so rank-locally: each rank scores other candidates."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), space_name), nprocs=2, join=True)
    single, scored = _search(tmp_path / "single", space_name=space_name)
    want = [[e["arch"], e["score"], e["origin"]] for e in single.entries]
    ranks = [json.loads((tmp_path / f"summary{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["entries"] == want
    assert ranks[0]["scored"] + ranks[1]["scored"] == scored == len(want)  # each candidate scored once, split
    assert min(r["scored"] for r in ranks) >= len(want) // 2 - 1
    assert (tmp_path / "rank0" / "result.json").is_file()
    assert not (tmp_path / "rank1").exists()  # only rank 0 writes
    r0 = json.loads((tmp_path / "rank0" / "result.json").read_text())
    assert r0["arch"] == json.loads((tmp_path / "single" / "result.json").read_text())["arch"]
