"""Q/DQ parity on *retrained* quantized nets (not random init): ORT vs torch on real test images.

    python bench/trained_parity.py [--spaces resnet18-mixed-trt,...] [--data digits] [--epochs 10]
        [--threads 1] [--workdir runs/bench-trained-parity] [--json]

For each space, one random architecture (seeded by its position) is retrained (resumable), then
exported by ``spos_hw.export`` from its checkpoint, which verifies it in ONNX Runtime
(ORT_ENABLE_ALL) against torch on the dataset's test images: top-1 agreement (target >= 99.5%),
the Q/DQ lowering's own error in steps (0: bit-exact), the end-to-end activation error, and
``check_trt`` violations of the written file. A failed verification is a row, not a crash.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import print_table

SPACES = "resnet18-mixed,resnet18-mixed-trt,shufflenetv2-small-w48a8,shufflenetv2-small-w48a8-trt,fbnet-small-w48a8-trt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default=SPACES)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--epochs", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="runs/bench-trained-parity")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import onnx
    import torch

    torch.set_num_threads(args.threads)
    from spos_hw.api import RetrainConfig, export, retrain
    from spos_hw.deploy.trt_check import check_trt
    from spos_hw.errors import VerificationError
    from spos_hw.nas.spaces import get_space

    t0 = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, name in enumerate(args.spaces.split(",")):
        space = get_space(name)
        arch = str(space.random_arch(np.random.default_rng(200 + k)))
        ckpt = work / f"{name}.pt"
        r = retrain(
            RetrainConfig(
                space=name,
                data=args.data,
                arch=arch,
                out=str(ckpt),
                epochs=args.epochs,
                seed=k,
                threads=args.threads,
                resume=True,
            ),
            progress=False,
        )
        out = work / f"{name}.onnx"
        try:
            res = export(checkpoint=str(ckpt), out=out, overwrite=True, progress=False)
            agree, step, e2e, note = res["top1_agreement"], res["max_step_error"], res["end_to_end_max_step_error"], res["inputs"]
            viol = check_trt(onnx.load(out))
        except VerificationError as exc:
            agree = step = e2e = None
            note, viol = str(exc)[:120], []
        rules = sorted({v.rule for v in viol})
        rows.append([name, round(100 * r["test_accuracy"], 2), agree, step, e2e, len(viol), ",".join(rules) or "-", note])
    print_table(
        f"Q/DQ parity on retrained nets ({args.data}, {args.epochs} epochs each)",
        [
            "space",
            "test top-1 %",
            "ORT-torch top-1 agreement",
            "Q/DQ step error",
            "end-to-end steps",
            "check_trt violations",
            "rules",
            "inputs",
        ],
        rows,
        args.json,
        extra={"wall": f"{time.perf_counter() - t0:.0f} s"},
    )


if __name__ == "__main__":
    main()
