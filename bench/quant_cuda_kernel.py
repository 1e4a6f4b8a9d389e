"""CUDA fake-quant throughput (Triton kernel) against the device's memory bandwidth.

    python bench/quant_cuda_kernel.py [--n 67108864] [--repeats 20] [--json]

Per dtype (fp32, bf16, fp16): forward (reads x, writes y) and backward (reads x and the
gradient, writes the input gradient, one fp32 partial per program), timed with CUDA events
(median of ``--repeats``, after warm-up), next to ``torch.fake_quantize_per_tensor_affine``
and a device-to-device copy. "% peak" is against the nominal HBM bandwidth when the device is
known (H100/H200/A100/...), and against the measured copy always. The run first checks the
device kernel bit-exactly against the CPU reference on a slice. Without CUDA it prints one
line and exits.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table

NOMINAL_GBPS = {  # HBM bandwidth from the vendors' data sheets (GB/s)
    "H200": 4800.0,
    "H100 SXM": 3350.0,
    "H100 NVL": 3900.0,
    "H100 PCIe": 2000.0,
    "A100-SXM4-80GB": 2039.0,
    "A100-SXM4-40GB": 1555.0,
    "A100 80GB PCIe": 1935.0,
    "L40S": 864.0,
    "L4": 300.0,
    "A10": 600.0,
}


def nominal(name: str) -> float | None:
    for key, value in NOMINAL_GBPS.items():
        if key.lower() in name.lower():
            return value
    return None


def cuda_time(fn, repeats: int) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64 * 1024 * 1024, help="elements")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("quant_cuda_kernel: no CUDA device here; nothing measured")
        return

    from spos_hw.quant import kernels
    from spos_hw.quant.fake_quant import fake_quant_backward_op, fake_quant_op, reference_backward, reference_forward
    from spos_hw.quant.kernels import cuda

    os.environ[kernels.ENV] = "native"
    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    peak = nominal(name)

    def pct(gbps: float) -> float | str:
        return 100 * gbps / peak if peak else "n/a"

    n = args.n
    g = torch.Generator(device=dev).manual_seed(0)
    s = torch.tensor(0.05, device=dev)
    rows = []
    exact = []
    copy_src = torch.randn(n, device=dev, generator=g)
    copy_dst = torch.empty_like(copy_src)
    t_copy = cuda_time(lambda: copy_dst.copy_(copy_src), args.repeats)
    copy_gbps = 8 * n / t_copy / 1e9
    rows.append(["fp32", "copy_ (device to device)", t_copy * 1e3, copy_gbps, 100.0, pct(copy_gbps)])
    copy_src = copy_dst = None  # free the device memory before the next allocations
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        size = torch.empty((), dtype=dtype).element_size()
        x = (torch.randn(n, device=dev, generator=g) * 2).to(dtype)
        grad = torch.randn(n, device=dev, generator=g).to(dtype)
        # exactness on a slice, against the CPU reference
        xs = x[: 1 << 20]
        y = cuda.forward(xs, s, -8, 7, 0, None)
        ok = torch.equal(
            y.cpu().float().view(torch.int32), reference_forward(xs.cpu(), s.cpu(), -8, 7, 0, None).float().view(torch.int32)
        )
        gx, _ = cuda.backward(grad[: 1 << 20], xs, s, -8, 7, 0, None)
        rgx, _ = reference_backward(grad[: 1 << 20].cpu(), xs.cpu(), s.cpu(), -8, 7, 0, None)
        exact.append(
            f"{dtype}: forward {'bit-exact' if ok else 'MISMATCH'}, grad_x {'bit-exact' if torch.equal(gx.cpu(), rgx) else 'MISMATCH'}"
        )

        t_f = cuda_time(lambda: fake_quant_op(x, s, -8, 7, 0, None, False), args.repeats)
        t_b = cuda_time(lambda: fake_quant_backward_op(grad, x, s, -8, 7, 0, None), args.repeats)
        t_c = cuda_time(lambda: fake_quant_op(x, s, -8, 7, 0, None, True), args.repeats)
        for pas, t, nbytes in (
            ("forward", t_f, 2 * size * n),
            ("backward", t_b, 3 * size * n),
            ("forward, scale checked (1 sync)", t_c, 2 * size * n),
        ):
            gbps = nbytes / t / 1e9
            rows.append(
                [str(dtype).replace("torch.", ""), f"spos_hw triton {pas}", t * 1e3, gbps, 100 * gbps / copy_gbps, pct(gbps)]
            )
        if dtype == torch.float32:
            t_t = cuda_time(lambda: torch.fake_quantize_per_tensor_affine(x, 0.05, 0, -8, 7), args.repeats)
            gbps = 2 * size * n / t_t / 1e9
            rows.append(["fp32", "torch.fake_quantize_per_tensor_affine", t_t * 1e3, gbps, 100 * gbps / copy_gbps, pct(gbps)])
        x = grad = None
    print_table(
        f"CUDA fake-quant on {name}, {n:,} elements, per tensor 4-bit (median of {args.repeats}, CUDA events)",
        ["dtype", "variant", "ms", "GB/s", "% of copy", f"% of nominal {peak or '?'} GB/s"],
        rows,
        args.json,
        extra={"elements": n, "exactness": "; ".join(exact)},
    )


if __name__ == "__main__":
    main()
