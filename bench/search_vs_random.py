"""Does the search pay off? The evolution's pick against random feasible nets, trained alone.

    python bench/search_vs_random.py --supernet supernet.pt --lut lut.json --out svr/ [--seeds 5] [--random 5] [--json]

Under one latency budget (``--budget-pct`` percentile of random archs' predicted latency), for each
search seed: the evolution's pick (``spos-hw search`` with that seed) and ``--random`` uniformly
drawn archs that meet the budget, every one retrained alone with one fixed short recipe (the
rank check's: ``--epochs`` passes, the dataset's lr, training seed 0, so the arch is the only thing
that differs). Prints, per seed, the pick's test accuracy beside the random nets' median and best,
and the wins (pick > median), the mean margin and its bootstrap 95% CI over seeds.

Every retrain and search is a resumable unit in ``--out`` (``ledger.json``): rerun the same command
after a kill and finished work is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pathlib import Path

import numpy as np
from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--supernet", required=True)
    ap.add_argument("--lut", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--random", type=int, default=5)
    ap.add_argument("--budget-pct", type=float, default=40.0)
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--holdout", type=int, default=2000)
    ap.add_argument("--recal-images", type=int, default=1152)
    ap.add_argument("--epochs", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import spos_hw
    from spos_hw.api import cost_models
    from spos_hw.demo.pipeline import latency_budget
    from spos_hw.io import atomic_write_json
    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.costs import Bound
    from spos_hw.nas.sampling import FeasibleSampler

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain").mkdir(parents=True, exist_ok=True)
    ledger_path = out / "ledger.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    net, ckpt = load_supernet(args.supernet)
    space = net.space
    predictor = cost_models(space, args.lut)["latency"]
    budget = latency_budget(predictor, space, args.budget_pct, samples=4000, seed=0)
    (out / "space.json").write_text(json.dumps(space.to_json()))
    data = (ckpt.get("data") or {}).get("dataset")

    def standalone(arch: str) -> float:
        key = f"retrain:{arch}"
        if key not in ledger:
            r = spos_hw.retrain(
                space=str(out / "space.json"),
                data=data,
                arch=arch,
                epochs=args.epochs,
                seed=0,
                threads=args.threads,
                out=str(out / "retrain" / f"{len(ledger):03d}.pt"),
                resume=True,
                ckpt_every=100,
                log_every=100,
                progress=False,
            )
            ledger[key] = r["test_accuracy"]
            atomic_write_json(ledger_path, ledger)
        return ledger[key]

    rows, margins = [], []
    for seed in range(args.seeds):
        key = f"search:{seed}"
        if key not in ledger:
            res = spos_hw.search(
                supernet=args.supernet,
                budgets={"latency": budget},
                lut=args.lut,
                seed=seed,
                population=args.population,
                generations=args.generations,
                holdout=args.holdout,
                recal_images=args.recal_images,
                threads=args.threads,
                out=str(out / f"search-{seed}"),
                resume=True,
                progress=False,
            )
            ledger[key] = {"arch": res["arch"], "score": res["accuracy"]}
            atomic_write_json(ledger_path, ledger)
        pick = ledger[key]["arch"]
        sampler = FeasibleSampler(space, [Bound.upper(predictor, budget)], rng=np.random.default_rng(1000 + seed))
        randoms = [str(a) for a in space.decode(sampler.sample(args.random))]
        acc_pick = standalone(pick)
        acc_rand = np.array([standalone(a) for a in randoms])
        margin = acc_pick - float(np.median(acc_rand))
        margins.append(margin)
        rows.append(
            [
                seed,
                round(float(predictor.cost(space.arch(pick).to_array()[None])[0]), 4),
                round(ledger[key]["score"] * 100, 2),
                round(acc_pick * 100, 2),
                round(float(np.median(acc_rand)) * 100, 2),
                round(float(acc_rand.max()) * 100, 2),
                round(margin * 100, 2),
            ]
        )
    m = np.array(margins)
    boot = np.random.default_rng(0).choice(m, size=(2000, len(m))).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print_table(
        f"search pick vs {args.random} random feasible nets, latency <= {budget:.4f} ms (p{args.budget_pct:g} of random archs)",
        ["seed", "pick predicted ms", "pick supernet %", "pick alone %", "random median %", "random best %", "margin (pts)"],
        rows,
        as_json=args.json,
        extra={
            "wins (pick > random median)": f"{int((m > 0).sum())} of {len(m)}",
            "mean margin (pts)": round(float(m.mean()) * 100, 2),
            "bootstrap 95% CI (pts)": [round(float(lo) * 100, 2), round(float(hi) * 100, 2)],
            "recipe": f"retrain {args.epochs:g} epoch(s), dataset lr, seed 0; search {args.population} x {args.generations}, "
            f"{args.holdout} held-out images, {args.recal_images} recalibration images",
            "targets": "wins >= 4 of 5, mean margin >= 0.5 pts",
        },
    )


if __name__ == "__main__":
    main()
