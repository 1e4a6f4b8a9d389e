"""Architectures priced per second: the vectorized FLOPs table vs counting a materialized module.

    python bench/flops_throughput.py [--n 1000000] [--json]

The vectorized model runs on one core (numpy gather + sum). The baseline builds each subnet
on torch's meta device and counts it with FlopCounterMode (no real arithmetic), the cheapest
honest module-based count.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np
from common import median_time, print_table


def module_count(space, arch) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from spos_hw.nas.supernet import SubNet

    with torch.device("meta"):
        net = SubNet(space, arch).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, *space.input_shape))
    return counter.get_total_flops() // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="architectures per vectorized call")
    ap.add_argument("--module-archs", type=int, default=20, help="architectures counted through modules")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from spos_hw.nas.spaces import get_space

    rows = []
    for name in ("shufflenetv2-imagenet", "shufflenetv2-small", "shufflenetv2-imagenet-ch"):
        space = get_space(name)
        batch = space.sample(np.random.default_rng(0), args.n)
        vec_s = median_time(lambda: space.flops.cost(batch), repeats=5)
        archs = space.decode(batch[: args.module_archs])
        assert all(module_count(space, a) == space.flops.cost(a.to_array()) for a in archs[:3])
        mod_s = median_time(lambda: [module_count(space, a) for a in archs], repeats=3) / len(archs)
        rows.append([name, args.n / vec_s, 1 / mod_s, (args.n / vec_s) * mod_s])
    print_table(
        "FLOPs model throughput (architectures / s, one core)",
        ["space", "vectorized", "module count (meta)", "ratio"],
        rows,
        args.json,
        {"target": "vectorized >= 1e6 / s"},
    )


if __name__ == "__main__":
    main()
