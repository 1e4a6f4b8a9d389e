"""Bit-exactness of the fake-quant op against ONNX Runtime's QuantizeLinear/DequantizeLinear.

    python bench/quant_exactness.py [--elements 4194304] [--opsets 21,25] [--json]

For every bit width 1..8 and each kind the layers use (per-channel signed weights, per-tensor
unsigned and signed activations), one module applying the op to an input of ``--elements``
elements is exported with ``spos_hw.quant.onnx`` and run on ONNX Runtime's CPU provider at
every graph optimization level; the table counts elements whose float32 bit patterns differ
from the torch op (any NaN equals any NaN; there are none in the data). The data mixes
Gaussian values spanning the clipping range, exact ties (power-of-two scales), +-0, +-inf and
huge/tiny magnitudes. For comparison, the last column counts the elements where PyTorch's
built-in fake-quant (which multiplies by 1/scale) differs from ONNX Runtime.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from common import print_table

KINDS = (
    ("weight, per channel, signed", True, 0),
    ("activation, per tensor, unsigned", False, None),
    ("activation, per tensor, signed", True, None),
)


def make_case(bits: int, signed: bool, axis, n: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    rows = 64
    cols = -(-n // rows)
    if axis is None:
        s = torch.tensor(2.0**-6 if bits % 2 else 0.0173)
        x = torch.randn(rows, cols, generator=g) * float(s) * 2**bits / 3
    else:
        s = torch.exp(torch.empty(rows).uniform_(-7, -1, generator=g))
        s[: rows // 4] = 2.0 ** torch.randint(-8, -2, (rows // 4,), generator=g).float()  # exact ties
        x = torch.randn(rows, cols, generator=g) * s[:, None] * 2**bits / 3
    flat = x.view(-1)
    k = min(4096, flat.numel() // 4)
    flat[:k] = (torch.randint(-300, 300, (k,), generator=g).float() + 0.5) * float(s.reshape(-1)[0])
    flat[k : k + 8] = torch.tensor([float("inf"), float("-inf"), -0.0, 0.0, 1e30, -1e30, 1e-30, -1e-38])
    return x, s


def torch_builtin(x, s, bits, signed, axis):
    """PyTorch's own fake-quant with the same integer range (None where it has no equivalent)."""
    import torch

    from spos_hw.quant.fake_quant import quant_range

    if bits == 1 and signed:
        return None
    qmin, qmax = quant_range(bits, signed)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, float(s), 0, qmin, qmax)
    return torch.fake_quantize_per_channel_affine(x, s, torch.zeros(s.shape, dtype=torch.int32), axis, qmin, qmax)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elements", type=int, default=4 * 1024 * 1024, help="elements per bit width and kind")
    ap.add_argument("--opsets", default="21,25")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from spos_hw.quant.fake_quant import quant_range
    from spos_hw.quant.onnx import LEVELS, FakeQuantCases, bit_mismatches, container, export_model, ort_outputs

    torch.set_num_threads(2)
    rows = []
    total_elements = 0
    for opset in (int(o) for o in args.opsets.split(",")):
        cases, scales, xs = [], [], []
        for bits in range(1, 9):
            for k, (_kind, signed, axis) in enumerate(KINDS):
                x, s = make_case(bits, signed, axis, args.elements, seed=100 * bits + k)
                cases.append((bits, signed, axis))
                scales.append(s)
                xs.append(x)
        module = FakeQuantCases(cases, scales).eval()
        model = export_model(module, tuple(xs), opset)
        with torch.no_grad():
            ref = [y.numpy() for y in module(*xs)]
        per_level = {level: ort_outputs(model, tuple(xs), level, threads=2) for level in LEVELS}
        for i, ((bits, signed, axis), x, s) in enumerate(zip(cases, xs, scales)):
            kind = KINDS[i % len(KINDS)][0]
            if bits == 1 and signed:
                box = "INT8 (+-1 via Where)" if axis is not None else "float Where (+-s)"
            else:
                name, clip = container(*quant_range(bits, signed))
                box = ("float clip + " if clip else "") + name
            mism = [bit_mismatches(per_level[level][i], ref[i]) for level in LEVELS]
            builtin = torch_builtin(x, s, bits, signed, axis)
            ort_all = per_level["all"][i]
            rows.append(
                [opset, bits, kind, box, x.numel(), *mism, "n/a" if builtin is None else bit_mismatches(builtin.numpy(), ort_all)]
            )
            total_elements += x.numel()
        del per_level, ref
    worst = max(max(r[5:9]) for r in rows)
    print_table(
        "Fake-quant vs ONNX Runtime Q/DQ: mismatching elements (float32 bit patterns)",
        ["opset", "bits", "kind", "container", "elements", *[f"ORT {lv}" for lv in LEVELS], "torch built-in vs ORT"],
        rows,
        args.json,
        extra={"total elements compared per level": total_elements, "max mismatches (spos_hw op)": worst},
    )


if __name__ == "__main__":
    main()
