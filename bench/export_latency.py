"""ONNX Runtime CPU latency of exported subnets against torch eager, same machine, batch and threads.

    nice -n 10 python bench/export_latency.py [--spaces a,b] [--archs 3] [--batch 1] [--threads 1] [--json]

Each random architecture is exported by ``spos_hw.deploy.onnx`` and timed in ONNX Runtime
(CPU EP, ORT_ENABLE_ALL, ``session.intra_op.allow_spinning=0``, fixed intra-op threads) and in
torch eager (``inference_mode``, same thread count), interleaved in rounds so both see the
same machine load. Figures: median ms per forward and the ratio ORT / torch (below 1: ORT faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table
from export_parity import calibrated


def time_pair(net, session, x, rounds: int, reps: int) -> tuple[float, float]:
    """Median seconds of one torch and one ORT forward, alternating in ``rounds`` of ``reps`` runs."""
    import torch

    xs = x.numpy()
    name = session.get_inputs()[0].name
    tt, to = [], []
    with torch.inference_mode():
        for _ in range(2):  # warm-up
            net(x)
            session.run(None, {name: xs})
        for _ in range(rounds):
            t = time.perf_counter()
            for _ in range(reps):
                net(x)
            tt.append((time.perf_counter() - t) / reps)
            t = time.perf_counter()
            for _ in range(reps):
                session.run(None, {name: xs})
            to.append((time.perf_counter() - t) / reps)
    return statistics.median(tt), statistics.median(to)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="shufflenetv2-small,shufflenetv2-imagenet,shufflenetv2-small-w48a8")
    ap.add_argument("--archs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import numpy as np
    import torch

    from spos_hw.deploy.onnx import export_onnx
    from spos_hw.deploy.verify import ort_session
    from spos_hw.nas.spaces import get_space

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.spaces.split(","):
        space = get_space(name)
        rng = np.random.default_rng(args.seed)
        x = torch.randn(args.batch, *space.input_shape, generator=torch.Generator().manual_seed(args.seed))
        reps = 20 if np.prod(space.input_shape) < 10_000 else 2
        for i in range(args.archs):
            arch = space.random_arch(rng)
            net = calibrated(space, arch, args.seed + i)
            session = ort_session(export_onnx(net, (x,)).SerializeToString(), threads=args.threads)
            t_torch, t_ort = time_pair(net, session, x, args.rounds, reps)
            rows.append([name, str(arch)[:40], args.batch, t_torch * 1e3, t_ort * 1e3, t_ort / t_torch])
            print(
                f"{name} {i + 1}/{args.archs}: torch {t_torch * 1e3:.2f} ms, ORT {t_ort * 1e3:.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    print_table(
        f"ONNX Runtime CPU vs torch eager (median ms per forward, {args.threads} thread(s), interleaved)",
        ["space", "arch", "batch", "torch ms", "ORT ms", "ORT / torch"],
        rows,
        args.json,
        extra={
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "median ratio": f"{statistics.median(r[-1] for r in rows):.3f}",
        },
    )


if __name__ == "__main__":
    main()
