"""Candidates scored per minute: the search's scorer vs a naive loop that re-reads the data per candidate.

    python bench/search_throughput.py [--data fashion-mnist] [--candidates 3] [--holdout N] [--json]

Each candidate is scored as ``spos-hw search`` scores it: BN statistics reset and recomputed on
the default recalibration budget (the paper's 200x128 ImageNet images scaled to the training
split), then top-1 on the held-out split. Three ways, on the same candidates, interleaved:

* ``search scorer``: what ``spos_hw.nas.recalibrate.SupernetScorer`` does: the batches decoded,
  normalised and stacked once (channels_last), only the path's BN reset, ``inference_mode``, and
  the held-out pass through the path cut out with its BN folded into the convs;
* ``search scorer, unfolded``: the same, the held-out pass through the supernet path itself;
* ``naive``: the dataset re-read and re-decoded for every candidate (as a loop around a
  DataLoader would), then the plain recipe a first loop writes: every BN reset, the whole net in
  train mode under ``no_grad`` for the statistics, eval mode for the held-out pass, default memory
  format (written here as the baseline; the package has one recalibration, the scorer's).

The scores of the three agree (the folded path is the same function up to float rounding).

The supernet is freshly initialised (scoring cost does not depend on the weights' values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--candidates", type=int, default=3, help="candidates per method")
    ap.add_argument(
        "--holdout-fraction", type=float, default=0.1, help="held-out share of the training data (train-supernet's default)"
    )
    ap.add_argument("--holdout", type=int, default=None, help="score on the first N held-out images (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from spos_hw.nas.data import eval_batches, load_data, recalibration_batches
    from spos_hw.nas.recalibrate import ScoringData, SupernetScorer, default_recal_images
    from spos_hw.nas.spaces import get_space
    from spos_hw.nas.supernet import Supernet

    torch.set_num_threads(args.threads)
    space = get_space(args.space)
    torch.manual_seed(0)
    net = Supernet(space).eval()
    rows = space.sample(np.random.default_rng(0), args.candidates)

    def prepare():
        data = load_data(args.data, space)
        split = data.split(args.holdout_fraction, 0)
        n_recal = default_recal_images(len(split.train))
        n_batches = -(-n_recal // 128)
        recal = recalibration_batches(data, split, n_batches, 128, 0)
        idx = split.holdout if args.holdout is None else split.holdout[: args.holdout]
        hold = [(data.prepare(x), y) for x, y in eval_batches(data.train, idx, 500)]
        return recal, hold

    plain_net = _copy(net)

    def naive(row) -> float:
        """What a loop without the search's preparation does: re-read the data, recalibrate every BN, score."""
        r, h = prepare()
        bns = [m for m in plain_net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        plain_net.train()
        with torch.no_grad():
            for x in r:
                plain_net(x, row)
            plain_net.eval()
            correct = sum(int((plain_net(x, row).argmax(1) == y).sum()) for x, y in h)
        return correct / sum(len(y) for _, y in h)

    t = time.perf_counter()
    recal, hold = prepare()
    prep_s = time.perf_counter() - t
    scorer = SupernetScorer(_copy(net), ScoringData.build(recal, hold))
    unfolded = SupernetScorer(_copy(net), ScoringData.build(recal, hold), fuse=False)
    n_recal, n_hold = sum(len(b) for b in recal), sum(len(y) for _, y in hold)
    scorer(rows[:1])  # warm the kernels of every method alike
    naive(rows[0])
    methods = {
        "search scorer": lambda r: float(scorer(r[None])[0]),
        "search scorer, unfolded": lambda r: float(unfolded(r[None])[0]),
        "naive (re-read per candidate)": naive,
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    scores: dict[str, list[float]] = {k: [] for k in methods}
    for row in rows:  # interleaved, so load drifts hit every method alike
        for name, fn in methods.items():
            t = time.perf_counter()
            scores[name].append(fn(row))
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["naive (re-read per candidate)"])
    table = []
    for name, ts in times.items():
        med = statistics.median(ts)
        table.append([name, med, 60.0 / med, base / med])
    ref = scores["naive (re-read per candidate)"]
    worst = max(abs(a - b) for k in methods for a, b in zip(scores[k], ref))  # float rounding can flip a borderline image
    print_table(
        f"search candidate throughput, {args.space} on {args.data}, {args.threads} thread(s)",
        ["method", "s/candidate (median)", "candidates/min", "x naive"],
        table,
        as_json=args.json,
        extra={
            "recalibration": f"{n_recal} training images in batches of 128 (default budget)",
            "held-out images": n_hold,
            "candidates per method": args.candidates,
            "one-time data preparation (s)": round(prep_s, 2),
            "largest score difference vs naive (held-out images)": round(worst * n_hold),
        },
    )


def _copy(net):
    import copy

    return copy.deepcopy(net)


if __name__ == "__main__":
    main()
