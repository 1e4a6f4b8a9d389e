"""Fashion-MNIST end to end on the CPU: supernet, a small search on the held-out split, retraining.

    python bench/train_fashion.py [--supernet-epochs 1] [--retrain-epochs 3] [--threads 1] [--json]

1. ``train_supernet`` on Fashion-MNIST (shufflenetv2-small, uniform single-path sampling; 6,000
   training images held out).
2. ``--candidates`` random architectures inherit the supernet's weights, get their BN
   statistics recalibrated on fixed training batches, and are scored on held-out images; the
   best one is kept (a tiny stand-in for the evolutionary search).
3. ``retrain`` trains it from scratch on all 60,000 training images, in ``--eval-points``
   segments (each resumed from the last checkpoint, which is bit-identical to one run); after
   each segment the checkpoint's top-1 accuracy on the 10,000 test images is measured.

The table gives test accuracy against training wall time (evaluation time excluded). Target:
>= 90% test accuracy after a few minutes of supernet and a few minutes of retraining.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--supernet-epochs", type=float, default=1.0)
    ap.add_argument("--retrain-epochs", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="retraining lr (default: the dataset recipe)")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--score-images", type=int, default=2000, help="held-out images per candidate")
    ap.add_argument("--eval-points", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1, help="1 is far faster than 2 when the 2 cores are shared")
    ap.add_argument("--arch", help="skip the search and retrain this arch")
    ap.add_argument("--out", default="runs/bench-fashion")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    torch.set_num_threads(args.threads)
    from spos_hw.api import RetrainConfig, SupernetConfig, retrain, train_supernet
    from spos_hw.nas.checkpoint import load_subnet, load_supernet
    from spos_hw.nas.data import load_data
    from spos_hw.nas.evaluation import evaluate
    from spos_hw.nas.recalibrate import scorer_for_checkpoint

    os.makedirs(args.out, exist_ok=True)
    rows: list[list] = []
    sup_path = os.path.join(args.out, "supernet.pt")
    sup = train_supernet(
        SupernetConfig(
            space=args.space,
            data="fashion-mnist",
            epochs=args.supernet_epochs,
            batch_size=args.batch,
            threads=args.threads,
            out=sup_path,
            overwrite=True,
            log_every=50,
        ),
        progress=False,
    )
    rows.append(
        [
            "supernet",
            f"{sup['steps']} steps ({args.supernet_epochs:g} ep)",
            round(sup["train_time_s"], 1),
            "",
            f"train acc {sup['train_acc']:.3f} (sampled paths)",
        ]
    )

    arch = args.arch
    candidates = []
    if arch is None:
        net, ckpt = load_supernet(sup_path)
        space = net.space
        scorer, _ = scorer_for_checkpoint(net, ckpt, recal_images=10 * 128, holdout=args.score_images)  # the search's scorer
        rng = np.random.default_rng(1)
        t0 = time.perf_counter()
        for _ in range(args.candidates):
            cand = space.random_arch(rng)
            score = float(scorer(cand.to_array()[None])[0])
            candidates.append((score, str(cand), int(space.flops.cost(cand.to_array()))))
        best = max(candidates)
        arch = best[1]
        rows.append(
            [
                "search",
                f"{args.candidates} candidates",
                round(time.perf_counter() - t0, 1),
                "",
                f"best held-out acc {best[0]:.3f} ({best[2] / 1e6:.2f} MFLOPs)",
            ]
        )

    model_path = os.path.join(args.out, "model.pt")
    base = dict(
        space=args.space,
        data="fashion-mnist",
        arch=arch,
        epochs=args.retrain_epochs,
        batch_size=args.batch,
        lr=args.lr,
        threads=args.threads,
        out=model_path,
        log_every=50,
        ckpt_every=100_000,
    )
    steps = int(np.ceil(args.retrain_epochs * (60_000 // args.batch)))
    stops = sorted({int(round(steps * (k + 1) / args.eval_points)) for k in range(args.eval_points)})
    curve = []
    for i, stop in enumerate(stops):
        r = retrain(RetrainConfig(**base, overwrite=i == 0, resume=i > 0), progress=False, stop_after=stop)
        if r["finished"]:
            acc = r["test_accuracy"]
        else:
            sub, ckpt = load_subnet(model_path)
            data_test = load_data("fashion-mnist", sub.space)
            acc = evaluate(sub.eval(), data_test, data_test.test, np.arange(len(data_test.test)))["accuracy"]
        curve.append(
            {
                "step": r["step"],
                "epoch": r["step"] / (60_000 // args.batch),
                "train_time_s": r["train_time_s"],
                "test_accuracy": acc,
            }
        )
        rows.append(
            [
                "retrain",
                f"{r['step']} steps ({r['step'] / (60_000 // args.batch):.2f} ep)",
                round(r["train_time_s"], 1),
                round(acc, 4),
                "final (lr decayed to 0)" if r["finished"] else "mid-run checkpoint",
            ]
        )
    total = sup["train_time_s"] + curve[-1]["train_time_s"]
    print_table(
        f"Fashion-MNIST, {args.space}, batch {args.batch}, {args.threads} thread(s): test accuracy vs training wall time",
        ["phase", "progress", "train time (s)", "test top-1", "note"],
        rows,
        args.json,
        {
            "arch": arch,
            "candidates": [list(c) for c in candidates],
            "curve": curve,
            "total_train_s": round(total, 1),
            "target": "test top-1 >= 0.90",
        },
    )


if __name__ == "__main__":
    main()
