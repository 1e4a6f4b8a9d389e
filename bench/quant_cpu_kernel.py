"""CPU fake-quant throughput: our op and kernel vs torch.fake_quantize_per_tensor_affine, the
reference formula in torch ops, and a plain tensor copy (16M fp32 elements by default).

    python bench/quant_cpu_kernel.py [--n 16777216] [--threads 2] [--repeats 9] [--json]

Every variant is timed in the same process, interleaved round-robin (one call of each per
round), and the median is reported. GB/s counts the bytes a variant must move: forward reads
x and writes y (8 B/element); forward+backward adds reading x and the gradient and writing
the input gradient (12 B/element more). Variants that return a new tensor ("allocating")
also pay the kernel's page faults for fresh memory; "into preallocated" isolates the kernel.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table


def interleaved(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, timed round-robin so load changes hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16 * 1024 * 1024, help="elements (fp32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from spos_hw.quant import kernels
    from spos_hw.quant.fake_quant import fake_quant, reference_forward
    from spos_hw.quant.kernels import cpu

    os.environ[kernels.ENV] = "native"  # measure the kernel or fail, never a silent fallback
    torch.set_num_threads(args.threads)
    n = args.n
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=g)
    scale = 0.05
    s = torch.tensor(scale)
    lib = cpu.library()
    out = torch.empty_like(x)
    grad = torch.randn(n, generator=g)

    ref = reference_forward(x, s, -128, 127, 0, None)
    assert torch.equal(fake_quant(x, s, bits=8, signed=True).view(torch.int32), ref.view(torch.int32))

    def kernel_prealloc():
        lib.fq_forward(x.data_ptr(), out.data_ptr(), s.data_ptr(), 1, 1, n, -128.0, 127.0, 0.0)

    fwd = {
        "torch.fake_quantize_per_tensor_affine": lambda: torch.fake_quantize_per_tensor_affine(x, scale, 0, -128, 127),
        "reference formula (torch ops)": lambda: reference_forward(x, s, -128, 127, 0, None),
        "spos_hw fake_quant op": lambda: fake_quant(x, s, bits=8, signed=True),
        "spos_hw kernel, into preallocated": kernel_prealloc,
        "copy (x.clone(), allocating)": lambda: x.clone(),
        "copy (out.copy_(x), preallocated)": lambda: out.copy_(x),
    }
    t_fwd = interleaved(fwd, args.repeats)

    xg = x.clone().requires_grad_()
    sg = s.clone().requires_grad_()

    def torch_fb():
        xg.grad = None
        torch.fake_quantize_per_tensor_affine(xg, scale, 0, -128, 127).backward(grad)

    def ours_fb():
        xg.grad = sg.grad = None
        fake_quant(xg, sg, bits=8, signed=True).backward(grad)

    t_fb = interleaved({"torch.fake_quantize_per_tensor_affine": torch_fb, "spos_hw fake_quant op": ours_fb}, args.repeats)

    base_f = t_fwd["torch.fake_quantize_per_tensor_affine"]
    rows = []
    for name, t in t_fwd.items():
        rows.append(["forward", name, t * 1e3, 8 * n / t / 1e9, base_f / t])
    base_b = t_fb["torch.fake_quantize_per_tensor_affine"]
    for name, t in t_fb.items():
        rows.append(["forward+backward", name, t * 1e3, 20 * n / t / 1e9, base_b / t])
    print_table(
        f"CPU fake-quant, {n:,} fp32 elements, int8 per tensor, {args.threads} threads (median of {args.repeats}, interleaved)",
        ["pass", "variant", "ms", "GB/s", "x torch fake_quantize"],
        rows,
        args.json,
        extra={"elements": n, "threads": args.threads},
    )


if __name__ == "__main__":
    main()
