"""Is the search worth trusting? Evolution vs random, and supernet rank vs stand-alone rank.

    python bench/search_validity.py [--supernet supernet.pt | --supernet-steps 600] [--seeds 3]
        [--population 10 --generations 5] [--recal-images 512 --holdout 1000]
        [--tau-archs 10 --retrain-steps 300] [--flops-m X] [--workdir DIR] [--json]

1. A supernet on ``--data`` (trained here for ``--supernet-steps`` unless ``--supernet`` is given).
2. Evolution vs random search at equal candidate budgets (``population x generations`` each),
   over ``--seeds`` seeds, under a FLOPs budget (default: the middle of the space's range).
   Both score with the search's scorer; one shared cache of scores serves every run (a score
   depends on the architecture alone), so identical candidates are scored once.
3. Kendall tau between supernet-inherited held-out accuracy and stand-alone test accuracy after
   short retraining from scratch, for ``--tau-archs`` architectures spread evenly over the
   range of supernet scores of everything evaluated in step 2.
4. Every chosen architecture meets its budget by prediction.

The paper's settings (population 50, 20 generations, full held-out split, long retraining)
take hours on 2 CPU cores; the defaults here are quick settings, printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from common import print_table


def kendall_tau(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--supernet", default=None, help="a trained supernet checkpoint (else one is trained)")
    ap.add_argument("--supernet-steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--recal-images", type=int, default=512)
    ap.add_argument("--holdout", type=int, default=1000, help="held-out images scored per candidate")
    ap.add_argument("--flops-m", type=float, default=None)
    ap.add_argument("--tau-archs", type=int, default=10)
    ap.add_argument("--retrain-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="bench_validity")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from spos_hw.api import RetrainConfig, SupernetConfig, retrain, train_supernet
    from spos_hw.nas.checkpoint import load_supernet
    from spos_hw.nas.costs import Bound, admits_all
    from spos_hw.nas.recalibrate import scorer_for_checkpoint
    from spos_hw.nas.search import run_search
    from spos_hw.nas.strategy import EvolutionSearch, RandomSearch

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. supernet
    sn_path = Path(args.supernet) if args.supernet else work / "supernet.pt"
    if args.supernet is None:
        t = time.perf_counter()
        train_supernet(
            SupernetConfig(
                space=args.space,
                data=args.data,
                out=str(sn_path),
                steps=args.supernet_steps,
                batch_size=args.batch_size,
                threads=args.threads,
                resume=sn_path.exists(),
            ),
            progress=False,
        )
        timings["supernet training (s)"] = round(time.perf_counter() - t, 1)
    net, ckpt = load_supernet(sn_path)
    space = net.space
    scorer, scoring = scorer_for_checkpoint(net, ckpt, recal_images=args.recal_images, holdout=args.holdout)
    cache: dict[str, float] = {}
    score_s: list[float] = []

    def cached(batch):
        out = []
        for row in batch:
            key = str(space.decode(row)[0])
            if key not in cache:
                t = time.perf_counter()
                cache[key] = float(scorer(row[None])[0])
                score_s.append(time.perf_counter() - t)
            out.append(cache[key])
        return np.array(out)

    lo, hi = space.flops.bounds()
    budget = Bound.scaled(space.flops, None, args.flops_m) if args.flops_m else Bound.upper(space.flops, (lo + hi) / 2)
    pop = args.population
    evo_opts = dict(population=pop, generations=args.generations, topk=max(2, pop // 5), mutations=pop // 2, crossovers=pop // 2)
    costs = {"flops": space.flops, "params": space.params}

    # 2. evolution vs random
    rows, chosen = [], []
    t = time.perf_counter()
    for seed in range(args.seeds):
        res = {}
        for name, make in (
            ("evolution", lambda: EvolutionSearch(space, [budget], rng=np.random.default_rng(seed), **evo_opts)),
            (
                "random",
                lambda: RandomSearch(
                    space, [budget], rng=np.random.default_rng(seed), population=pop, generations=args.generations
                ),
            ),
        ):
            r = run_search(make(), cached, costs=costs, plots=False)
            res[name] = r
            chosen.append(space.arch(r.best["arch"]).to_array())
        e, rnd = res["evolution"].best["accuracy"], res["random"].best["accuracy"]
        rows.append([seed, res["evolution"].evaluated, e, rnd, e - rnd])
    timings["searches (s)"] = round(time.perf_counter() - t, 1)
    diffs = [r[4] for r in rows]
    rows.append(
        [
            "mean",
            rows[0][1],
            statistics.mean(r[2] for r in rows),
            statistics.mean(r[3] for r in rows[: args.seeds]),
            statistics.mean(diffs),
        ]
    )
    meets = bool(admits_all([budget], np.stack(chosen)).all())

    # 3. Kendall tau on archs spread over the scores seen (--tau-archs 0 skips it)
    keys = sorted(cache, key=cache.get)
    k = min(args.tau_archs, len(keys))
    picks = [keys[int(round(i))] for i in np.linspace(0, len(keys) - 1, k)]
    tau_rows = []
    t = time.perf_counter()
    for i, arch in enumerate(picks):
        out = work / f"retrain_{i}.pt"
        summary = retrain(
            RetrainConfig(
                space=args.space,
                data=args.data,
                arch=arch,
                out=str(out),
                steps=args.retrain_steps,
                batch_size=args.batch_size,
                threads=args.threads,
                resume=out.exists(),
            ),
            progress=False,
        )
        tau_rows.append([arch, int(space.flops.cost(space.arch(arch).to_array())), cache[arch], summary["test_accuracy"]])
    timings["retraining (s)"] = round(time.perf_counter() - t, 1)
    tau = kendall_tau([r[2] for r in tau_rows], [r[3] for r in tau_rows]) if k >= 2 else float("nan")

    settings = {
        "space": args.space,
        "data": args.data,
        "supernet": str(sn_path),
        "supernet steps": ckpt.get("step"),
        "budget": budget.describe(),
        "evolution": evo_opts,
        "random": {"population": pop, "generations": args.generations},
        "scoring": scoring,
        "retrain steps (batch %d)" % args.batch_size: args.retrain_steps,
        "threads": args.threads,
    }
    extra = {
        "settings": json.dumps(settings),
        "evolution wins": f"{sum(d > 0 for d in diffs)}/{len(diffs)} seeds (ties {sum(d == 0 for d in diffs)})",
        "distinct candidates scored": len(cache),
        "median s/candidate": round(statistics.median(score_s), 3) if score_s else None,
        "every chosen arch meets the budget (predicted)": meets,
        "Kendall tau (supernet held-out vs stand-alone test), %d archs" % k: round(tau, 3),
        **timings,
    }
    print_table(
        "evolution vs random search (best supernet held-out top-1)",
        ["seed", "candidates", "evolution", "random", "evo - random"],
        rows,
        as_json=args.json,
        extra=extra,
    )
    if not tau_rows:
        return
    print()
    print_table(
        "supernet-inherited vs stand-alone accuracy",
        ["arch", "FLOPs", "supernet held-out", "stand-alone test"],
        tau_rows,
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
