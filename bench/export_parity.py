"""Parity of exported subnets: ONNX Runtime (ORT_ENABLE_ALL, CPU) against the torch model.

    nice -n 10 python bench/export_parity.py [--spaces a,b] [--archs 20] [--json]

For each space, ``--archs`` random architectures (seeded) are built with BN statistics from one
batch of random inputs (exact averages) and random-init quantizer step sizes, exported by the
one export path (``spos_hw.deploy.onnx``) and compared on seeded standard-normal inputs by
``spos_hw.deploy.verify.compare``: worst-case max |diff| of the logits (and relative to the
largest logit), worst top-1 agreement, and for Q/DQ spaces the worst activation error in
quantization steps (every activation quantizer's output, ORT vs torch).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table

SPACES = {  # space: (inputs, batch)
    "shufflenetv2-small": (256, 32),
    "shufflenetv2-small-ch": (256, 32),
    "shufflenetv2-small-w48a8": (256, 32),
    "resnet18-mixed": (256, 32),
    "shufflenetv2-imagenet": (8, 2),
    "shufflenetv2-imagenet-ch": (8, 2),
}


def calibrated(space, arch, seed: int):
    """A random-init subnet whose BN statistics are the exact averages over one random batch."""
    import torch

    from spos_hw.nas.supernet import SubNet

    torch.manual_seed(seed)
    net = SubNet(space, arch)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        net.train()(torch.randn(16, *space.input_shape, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


def one_arch(space, arch, x, batch: int, seed: int) -> dict:
    """Export one calibrated random-init subnet and compare it with torch."""
    from spos_hw.deploy.onnx import export_onnx
    from spos_hw.deploy.verify import compare

    net = calibrated(space, arch, seed)
    t = time.perf_counter()
    model = export_onnx(net, (x[:batch],))
    export_s = time.perf_counter() - t
    f = compare(net, model, x, precision="int8" if space.quantized else "fp32", batch=batch, threads=1)
    return {**f, "rel": f["max_abs_diff"] / max(f["max_abs_logit"], 1e-12), "export_s": export_s, "arch": str(arch)}


def run(names: list[str], n_archs: int, seed: int, budget_s: float) -> list[dict]:
    """Round-robin over the spaces (arch i of every space, then i + 1) until done or out of time."""
    import numpy as np
    import torch

    from spos_hw.nas.spaces import get_space

    spaces = {n: get_space(n) for n in names}
    rngs = {n: np.random.default_rng(seed) for n in names}
    xs = {n: torch.randn(SPACES[n][0], *s.input_shape, generator=torch.Generator().manual_seed(seed)) for n, s in spaces.items()}
    results: dict[str, list[dict]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for i in range(n_archs):
        for n, space in spaces.items():
            if time.perf_counter() - t0 > budget_s:
                break
            r = one_arch(space, space.random_arch(rngs[n]), xs[n], SPACES[n][1], seed + i)
            results[n].append(r)
            print(
                f"{n} {i + 1}/{n_archs} {r['arch']}: diff {r['max_abs_diff']:.3g} rel {r['rel']:.3g} "
                f"top1 {r['top1_agreement']:.4f} qdq steps {r.get('max_step_error', '-')} bits {r.get('qdq_bit_mismatches', '-')} "
                f"e2e steps {r.get('end_to_end_max_step_error', '-')} e2e frac {r.get('end_to_end_step_error_fraction', '-')} "
                f"export {r['export_s']:.1f}s",
                file=sys.stderr,
                flush=True,
            )
    out = []
    for n, rs in results.items():
        if not rs:
            continue
        out.append(
            {
                "space": n,
                "archs": len(rs),
                "inputs": SPACES[n][0],
                "batch": SPACES[n][1],
                "precision": "int8" if spaces[n].quantized else "fp32",
                "max_abs_diff": max(r["max_abs_diff"] for r in rs),
                "rel": max(r["rel"] for r in rs),
                "top1": min(r["top1_agreement"] for r in rs),
                "steps": max(r.get("max_step_error", 0.0) for r in rs),
                "bits": sum(r.get("qdq_bit_mismatches", 0) for r in rs),
                "e2e": max(r.get("end_to_end_max_step_error", 0.0) for r in rs),
                "e2e_frac": max(r.get("end_to_end_step_error_fraction", 0.0) for r in rs),
                "export_s": [r["export_s"] for r in rs],
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-min", type=float, default=1e9, help="Stop starting new archs after this many minutes.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import statistics

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for r in run(args.spaces.split(","), args.archs, args.seed, args.budget_min * 60):
        q = r["precision"] == "int8"
        steps = f"{r['steps']:.3g} ({r['bits']} bits differ)" if q else "-"
        e2e = f"{r['e2e']:.3g} ({r['e2e_frac']:.2%} of elements)" if q else "-"
        rows.append(
            [
                r["space"],
                r["precision"],
                r["archs"],
                f"{r['inputs']} (batch {r['batch']})",
                f"{r['max_abs_diff']:.3g}",
                f"{r['rel']:.3g}",
                f"{r['top1']:.2%}",
                steps,
                e2e,
                f"{statistics.median(r['export_s']):.1f}",
            ]
        )
    print_table(
        "Export parity, ORT (ORT_ENABLE_ALL, CPU EP) vs torch: worst case over random archs",
        [
            "space",
            "precision",
            "archs",
            "inputs",
            "max |diff|",
            "max |diff| / max |logit|",
            "min top-1 agreement",
            "Q/DQ max step error",
            "end-to-end max step error",
            "export s (median)",
        ],
        rows,
        args.json,
        extra={"torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__, "threads": args.threads},
    )


if __name__ == "__main__":
    main()
