"""Stand-alone evaluation: the retrain's test pass with BN folded into the convs vs the plain net.

    python bench/eval_speed.py [--space shufflenetv2-small] [--data fashion-mnist] [--archs 3] [--threads 1] [--json]

Random archs, random-init weights with BN statistics from a few training batches (speed does not
depend on the values); each arch evaluated on the whole test split both ways, interleaved, 3 times.
Prints the median seconds per pass, the ratio and the largest accuracy difference (in images).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from spos_hw.nas.data import load_data
    from spos_hw.nas.evaluation import evaluate
    from spos_hw.nas.runs import eval_copy
    from spos_hw.nas.spaces import get_space
    from spos_hw.nas.supernet import SubNet

    space = get_space(args.space)
    data = load_data(args.data, space)
    idx = np.arange(len(data.test))
    warm = data.prepare(data.train.fetch(np.arange(512)))
    rows, ratios = [], []
    for i, arch in enumerate(space.decode(space.sample(np.random.default_rng(0), args.archs))):
        torch.manual_seed(i)
        net = SubNet(space, arch).to(memory_format=torch.channels_last)
        with torch.no_grad():
            net.train()(warm.contiguous(memory_format=torch.channels_last))  # BN statistics that are not the init's
        ways = {"plain": lambda: net.eval(), "BN folded": lambda: eval_copy(net, space)}
        t = {k: [] for k in ways}
        acc = {}
        for _ in range(3):
            for k, make in ways.items():
                start = time.perf_counter()
                acc[k] = evaluate(make(), data, data.test, idx, batch_size=500, channels_last=True)["accuracy"]
                t[k].append(time.perf_counter() - start)
        plain, folded = statistics.median(t["plain"]), statistics.median(t["BN folded"])
        ratios.append(plain / folded)
        rows.append(
            [
                i,
                round(plain, 3),
                round(folded, 3),
                round(plain / folded, 3),
                round(abs(acc["plain"] - acc["BN folded"]) * len(idx)),
            ]
        )
    rows.append(["median", "", "", round(statistics.median(ratios), 3), ""])
    print_table(
        f"test pass over {len(idx)} images, {args.space}, {args.threads} thread(s), batch 500, channels_last",
        ["arch", "plain (s)", "BN folded (s, copy included)", "speed-up", "accuracy difference (images)"],
        rows,
        as_json=args.json,
    )


if __name__ == "__main__":
    main()
