"""One supernet training step (batch 128, CPU) of the quantized spaces beside their float twins.

    python bench/quant_supernet_step.py [--batch 128] [--steps 8] [--threads 2] [--json]

Each step samples a random path (uniform over the space), runs forward, cross-entropy,
backward and an SGD update, with channels_last inputs. The spaces are stepped round-robin
(one step of each per round) so machine load hits them alike; medians are reported. The
"float twin" is the same space with every bit width set to 32 (no fake-quant at all).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    from spos_hw.nas.spaces import get_space
    from spos_hw.nas.supernet import Supernet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spaces = {}
    for name in ("resnet18-mixed", "shufflenetv2-small-w48a8"):
        q = get_space(name)
        spaces[name] = q
        spaces[name + " (float twin)"] = dataclasses.replace(
            q, name=q.name + "-fp", wbits=(32,), abits=(32,), fixed_bits=(32, 32)
        )
    spaces["shufflenetv2-small"] = get_space("shufflenetv2-small")

    state = {}
    for key, space in spaces.items():
        net = Supernet(space).train().to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        x = torch.randn(args.batch, *space.input_shape).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, space.num_classes, (args.batch,))
        state[key] = (space, net, opt, x, y, np.random.default_rng(0), [])

    def step(key):
        space, net, opt, x, y, rng, times = state[key]
        arch = space.sample(rng, 1)[0]
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x, arch), y).backward()
        opt.step()
        return time.perf_counter() - t

    for key in spaces:  # warm-up: first-use initialisations, allocator
        for _ in range(2):
            step(key)
    for _ in range(args.steps):
        for key in spaces:
            state[key][-1].append(step(key))
    rows = []
    for key, space in spaces.items():
        med = statistics.median(state[key][-1])
        lo, hi = space.flops.bounds()
        rows.append([key, f"{lo / 1e6:.1f}..{hi / 1e6:.1f}", med, args.batch / med])
    print_table(
        f"Supernet step on CPU, batch {args.batch}, {args.threads} threads (median of {args.steps}, round-robin)",
        ["space", "MFLOPs per image", "s / step", "images / s"],
        rows,
        args.json,
    )


if __name__ == "__main__":
    main()
