"""Supernet training step on a sampled path vs the standalone subnet of the same arch.

    python bench/train_step.py [--space shufflenetv2-small] [--batch 128] [--archs 8] [--repeats 5] [--json]

Both go through the same ``Trainer.train_step`` (data gather + augmentation, forward, label-
smoothed loss, backward, SGD step) at the same batch on this CPU, channels_last. The supernet
runs ``Supernet.forward(x, arch)`` on its widest weights with unsampled paths' grads None; the
subnet is ``Supernet.materialize(arch)``. Per arch the two are timed interleaved, median of
``repeats`` steps each; the table gives medians over archs. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
from common import median_time, print_table


class FixedArch:
    """A 'sampler' that always returns one arch (the bench times a given path)."""

    def __init__(self, row):
        self.row = row

    def sample(self, n=1):
        return np.repeat(self.row[None], n, axis=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--data", default="digits", help="any --data; digits loads in a second (same 32x32 input)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from spos_hw.nas.config import TrainConfig, resolve
    from spos_hw.nas.data import BatchOrder, load_data
    from spos_hw.nas.distributed import Dist
    from spos_hw.nas.spaces import get_space
    from spos_hw.nas.supernet import Supernet
    from spos_hw.nas.trainer import SupernetPolicy, Trainer

    space = get_space(args.space)
    data = load_data(args.data, space)
    order = BatchOrder(np.arange(len(data.train)), args.batch, 0)
    cfg = resolve(TrainConfig(space=args.space, data=args.data, out="-", steps=10_000, batch_size=args.batch), len(data.train))
    torch.manual_seed(0)
    supernet = Supernet(space)
    rng = np.random.default_rng(0)
    rows, sup_t, sub_t = [], [], []
    for i in range(args.archs):
        arch = space.random_arch(rng)
        row = arch.to_array()
        sub = supernet.materialize(arch)
        t_sup = Trainer(supernet, SupernetPolicy(supernet, FixedArch(row)), data=data, order=order, config=cfg, dist=Dist())
        t_sub = Trainer(sub, data=data, order=order, config=cfg, dist=Dist())
        a = median_time(t_sup.train_step, repeats=args.repeats, warmup=2)
        b = median_time(t_sub.train_step, repeats=args.repeats, warmup=2)
        a2 = median_time(t_sup.train_step, repeats=args.repeats, warmup=0)  # interleave: sup, sub, sup, sub
        b2 = median_time(t_sub.train_step, repeats=args.repeats, warmup=0)
        sa, sb = statistics.median([a, a2]), statistics.median([b, b2])
        sup_t.append(sa)
        sub_t.append(sb)
        rows.append([i, f"{space.flops.cost(row) / 1e6:.2f}", round(sa * 1e3, 1), round(sb * 1e3, 1), round(sa / sb, 3)])
    ratios = [r[-1] for r in rows]
    rows.append(
        [
            "median",
            "",
            round(statistics.median(sup_t) * 1e3, 1),
            round(statistics.median(sub_t) * 1e3, 1),
            round(statistics.median(ratios), 3),
        ]
    )
    print_table(
        f"training step, {args.space}, batch {args.batch}, {args.threads} threads, channels_last (ms)",
        ["arch", "MFLOPs", "supernet path", "standalone subnet", "ratio"],
        rows,
        args.json,
        {"target": "ratio <= 1.03 (issue 16; the supernet is entangled, the default)"},
    )


if __name__ == "__main__":
    main()
