"""Post-training INT8 of float nets: ``export --precision int8 --calibrate N`` vs ONNX Runtime's ``quantize_static``.

    python bench/ptq_int8.py [--space shufflenetv2-small] [--data fashion-mnist] [--nets 2] [--epochs 1]
        [--calibrate 512] [--test 2000] [--threads 1] [--workdir runs/bench-ptq] [--json]

For each of ``--nets`` random architectures of a float space: ``retrain`` it (resumable, one
recipe and seed per net), export it fp32, then quantize the *same* fp32 export

- with ours, once per calibration method (``max``, ``percentile``, ``entropy``), on the same
  ``--calibrate`` training images;
- with ``onnxruntime.quantization.quantize_static`` (QDQ format, symmetric INT8 activations,
  symmetric per-channel INT8 weights, MinMax calibration, its defaults otherwise) on those images.

Reported per model: top-1 on the first ``--test`` test images in ONNX Runtime (CPU EP,
ORT_ENABLE_ALL), ORT latency (median of 20 runs, batch 1, ``--threads``), and how many
``check_trt`` violations the graph has (0: TensorRT-conformant). Targets (issue 17): ours within
0.5 points of float and no worse than ``quantize_static``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import median_time, print_table


def _session(data: bytes, threads: int):
    from spos_hw.deploy.verify import ort_session

    return ort_session(data, threads=threads, level="all")


def accuracy(data: bytes, x, y, threads: int) -> float:
    from spos_hw.deploy.verify import run_batched

    sess = _session(data, threads)
    dim0 = sess.get_inputs()[0].shape[0]
    out = run_batched(sess, x, dim0 if isinstance(dim0, int) else None)[0]
    return float((out.argmax(1) == y).mean())


def latency_ms(data: bytes, x, threads: int) -> float:
    sess = _session(data, threads)
    name = sess.get_inputs()[0].name
    one = x[:1]
    return 1e3 * median_time(lambda: sess.run(None, {name: one}), repeats=20, warmup=3)


def ort_static(fp32_path: Path, out: Path, calib) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="shufflenetv2-small")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--nets", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--calibrate", type=int, default=512)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="runs/bench-ptq")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import onnx
    import torch

    torch.set_num_threads(args.threads)
    from spos_hw.api import RetrainConfig, export, retrain
    from spos_hw.deploy.model import calibration_images, load_net
    from spos_hw.deploy.trt_check import check_trt
    from spos_hw.nas.data import load_data
    from spos_hw.nas.spaces import get_space

    t0 = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    space = get_space(args.space)
    rows, records = [], []
    for k in range(args.nets):
        arch = str(space.random_arch(np.random.default_rng(100 + k)))
        ckpt = work / f"net{k}.pt"
        r = retrain(
            RetrainConfig(
                space=args.space,
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
        _, info = load_net(checkpoint=str(ckpt))
        data = load_data(info["dataset"], info["_space"])
        n = min(args.test, len(data.test))
        mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(info["std"]).view(1, -1, 1, 1)
        xt = ((data.test.fetch(np.arange(n)).float() / 255.0 - mean) / std).numpy()
        yt = data.test.labels[:n]
        calib = calibration_images(str(ckpt), info, info["_space"], args.calibrate)

        fp32 = work / f"net{k}.fp32.onnx"
        export(checkpoint=str(ckpt), out=fp32, overwrite=True, progress=False)
        models = {"fp32": fp32}
        timings = {}
        for method in ("max", "percentile", "entropy"):
            path = work / f"net{k}.ptq-{method}.onnx"
            t = time.perf_counter()
            export(
                checkpoint=str(ckpt),
                out=path,
                precision="int8",
                calibrate=args.calibrate,
                calibration=method,
                overwrite=True,
                progress=False,
                verify=False,  # measured below on the test images instead (a failed agreement is a result here)
            )
            timings[f"ours {method}"] = time.perf_counter() - t
            models[f"ours {method}"] = path
        path = work / f"net{k}.ort-static.onnx"
        t = time.perf_counter()
        ort_static(fp32, path, calib)
        timings["quantize_static"] = time.perf_counter() - t
        models["quantize_static"] = path

        float_acc = None
        for label, p in models.items():
            blob = p.read_bytes()
            acc = accuracy(blob, xt, yt, args.threads)
            float_acc = acc if label == "fp32" else float_acc
            lat = latency_ms(blob, xt, args.threads)
            viol = check_trt(onnx.load_from_string(blob)) if label != "fp32" else []
            rules = sorted({v.rule for v in viol})
            row = [
                k,
                label,
                round(100 * acc, 2),
                round(100 * (acc - float_acc), 2),
                round(lat, 3),
                len(viol),
                ",".join(rules) or "-",
            ]
            rows.append(row)
            records.append(
                dict(
                    net=k,
                    arch=arch,
                    model=label,
                    top1=acc,
                    delta_pts=100 * (acc - float_acc),
                    ort_ms=lat,
                    trt_violations=len(viol),
                    rules=rules,
                    quantize_s=timings.get(label),
                    retrain_test_acc=r.get("test_accuracy"),
                )
            )
    print_table(
        f"PTQ INT8 vs quantize_static ({args.space}, {args.data}, {args.epochs} epochs, {args.calibrate} calibration images, "
        f"{args.test} test images)",
        ["net", "model", "top-1 %", "vs fp32 (pts)", "ORT ms (b=1)", "check_trt violations", "rules"],
        rows,
        args.json,
        extra={"records": records, "wall_s": round(time.perf_counter() - t0, 1)}
        if args.json
        else {"wall": f"{time.perf_counter() - t0:.0f} s"},
    )
    (work / "result.json").write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
