"""``export_model``: a retrained checkpoint (or a random-init architecture) as a verified ONNX file
or TensorRT engine. What ``spos-hw export`` and ``spos-hw demo`` call.

Order of work: load and check the net -> export ONNX in memory (metadata props added) ->
verify in ONNX Runtime against torch -> write the ONNX atomically -> (``trt``) import
TensorRT, build, run and compare with ORT -> write the engine atomically. A failure at any
step leaves nothing under the output name; a missing TensorRT leaves the verified ONNX.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from spos_hw.deploy.config import FORMATS, PRECISIONS, ExportConfig
from spos_hw.errors import ArtifactMismatch, ConfigError, VerificationError

log = logging.getLogger(__name__)

VERIFY_COUNT = 256
"""Inputs verification runs on (256: one disagreement is 0.4%, inside the Q/DQ 99.5% bound only if alone)."""
REAL_INPUT_LIMIT = 64 * 64 * 3
"""Verification uses real test images only when an image is at most this many values (cheap to load)."""
TRT_PARITY = {"fp32": 1e-3, "fp16": 5e-2, "int8": 5e-2}
"""TensorRT vs ORT: max diff relative to the largest |logit| (kernels and fusions differ)."""


def export_model(config: ExportConfig, *, verify_inputs: Any = None, progress: bool = False) -> dict[str, Any]:
    """Export one subnet and verify it; returns a JSON-serializable summary.

    Args:
        config: what to export and how (see ``ExportConfig``).
        verify_inputs: a float tensor ``[n, C, H, W]`` of already-normalised inputs; default: real test
            images when the checkpoint's dataset is cheap to load, else seeded standard-normal inputs.
        progress: show a progress bar over the steps.
    """
    import torch
    from tqdm.auto import tqdm

    from spos_hw.deploy.onnx import export_onnx
    from spos_hw.io import atomic_write_bytes, check_new_output

    t0 = time.perf_counter()
    fmt, out, onnx_path = config.format, Path(config.out), config.onnx_out
    batch_size, dynamic_batch, opset = config.batch_size, config.dynamic_batch, config.opset
    check_new_output(out, overwrite=config.overwrite)
    if onnx_path != out:
        check_new_output(onnx_path, overwrite=config.overwrite)

    with tqdm(total=5 if fmt == "trt" else 3, desc="export", disable=not progress, leave=False) as bar:
        net, info = load_net(checkpoint=config.checkpoint, arch=config.arch, space=config.space)
        space_obj = info.pop("_space")
        precision = resolve_precision(
            config.precision, space_obj.quantized, config.checkpoint is not None, calibrate=config.calibrate
        )
        ptq = precision == "int8" and not space_obj.quantized
        bar.update(1)

        n_example = max(batch_size, 2) if dynamic_batch else batch_size
        example = torch.randn(n_example, *space_obj.input_shape, generator=torch.Generator().manual_seed(0))
        module = half_precision(net) if precision == "fp16" else net
        model = export_onnx(
            module, (example,), None, opset=opset, dynamic_batch=dynamic_batch, metadata=metadata(info, precision)
        )
        folded = 0
        calibration = None
        if ptq:
            from spos_hw.deploy.ptq import post_training_int8

            images = calibration_images(config.checkpoint, info, space_obj, config.calibrate)
            calibration = post_training_int8(model, images, method=config.calibration)
        elif precision == "int8":
            from spos_hw.deploy.fold import fold_batchnorm, prequantize_weights

            prequantize_weights(model)  # exact: integer weight initializers, no weight QuantizeLinear
            folded = fold_batchnorm(model) if config.fold_bn else 0
        bar.update(1)

        result: dict[str, Any] = {
            "path": str(out),
            "onnx": str(onnx_path),
            "format": fmt,
            "precision": precision,
            **{k: v for k, v in info.items() if k != "space_spec"},
            "opset": opset,
            "batch": "dynamic" if dynamic_batch else batch_size,
            "nodes": len(model.graph.node),
            "qdq_nodes": sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node),
            "bn_folded": folded,
            "calibration": calibration,
            "verified": False,
            "max_abs_diff": None,
            "top1_agreement": None,
        }
        x = None
        if config.verify:
            from spos_hw.deploy.verify import check, compare

            x, result["inputs"] = verification_inputs(verify_inputs, config.checkpoint, info, space_obj)
            kind = "ptq" if ptq else precision
            figures = compare(module, model, x, precision=kind, batch=None if dynamic_batch else batch_size)
            result.update({k: v for k, v in figures.items() if k not in ("n",)}, n_inputs=figures["n"])
            check(figures, kind)
            result["verified"] = True
        data = model.SerializeToString()
        atomic_write_bytes(onnx_path, data)
        result["onnx_bytes"] = len(data)
        bar.update(1)
        if fmt == "trt":
            result.update(
                _build_trt(
                    data, out, precision, batch_size, dynamic_batch, config.timing_cache, x if config.verify else None, bar
                )
            )
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def half_precision(net):
    """``net`` in fp16 (weights and compute) with float32 inputs and outputs, so preprocessing is unchanged."""
    import torch

    class Half(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    return Half(net.half()).eval()


def load_net(*, checkpoint=None, arch=None, space=None):
    """The eval-mode ``SubNet`` and what the export records about it (``_space``: the space object)."""
    import torch

    from spos_hw.nas.spaces import get_space, read_arch
    from spos_hw.nas.supernet import SubNet

    if isinstance(space, str):
        space = get_space(space)
    if checkpoint is not None:
        from spos_hw.nas.checkpoint import check_space, load_subnet

        net, ckpt = load_subnet(checkpoint)
        if space is not None:
            check_space(ckpt, space, checkpoint)
        space = net.space
        if arch is not None:
            wanted = read_arch(space, arch)
            if wanted != net.arch:
                raise ArtifactMismatch(f"checkpoint {str(checkpoint)!r} holds arch {net.arch}, not the requested {wanted}")
        inp = ckpt.get("input") or {}
        info = {
            "weights": f"checkpoint {Path(checkpoint).name}",
            "mean": inp.get("mean"),
            "std": inp.get("std"),
            "classes": ckpt.get("classes"),
            "dataset": (ckpt.get("data") or {}).get("dataset"),
            "test_accuracy": ckpt.get("test_accuracy"),
        }
    else:
        net = SubNet(space, read_arch(space, arch))
        info = {"weights": "random init", "mean": None, "std": None, "classes": None, "dataset": None, "test_accuracy": None}
        if space.quantized:  # initialise every step size with one eager batch, as training would
            with torch.no_grad():
                net.train()(torch.randn(8, *space.input_shape, generator=torch.Generator().manual_seed(1)))
    net = net.eval()
    info.update(
        space=space.name,
        fingerprint=space.fingerprint,
        arch=str(net.arch),
        arch_json=net.arch.to_json(),
        input_shape=list(space.input_shape),
        space_spec=space.to_json(),
        _space=space,
    )
    return net, info


def resolve_precision(precision: str | None, quantized: bool, has_checkpoint: bool, *, calibrate: int | None = None) -> str:
    if quantized:
        if precision not in (None, "int8"):
            raise ConfigError(
                f"this net is quantized (its space has sub-32-bit layers): it exports as Q/DQ, --precision int8, not {precision}"
            )
        if calibrate is not None:
            raise ConfigError("--calibrate is for float nets; this one is quantized and carries its own trained scales")
        return "int8"
    if precision == "int8":
        if not has_checkpoint:
            raise ConfigError(
                "--precision int8 on a float net calibrates on its training images: it needs --checkpoint "
                "(a random-init --arch has none)"
            )
        if calibrate is None:
            raise ConfigError(
                "--precision int8 on a float net is post-training quantization: give --calibrate N (training images, "
                "e.g. 512), or retrain in a quantized space such as shufflenetv2-small-w48a8-trt"
            )
    return precision or "fp32"


def calibration_images(checkpoint, info: dict[str, Any], space, n: int):
    """``n`` normalised training images of the checkpoint's dataset (seeded choice), as float32 numpy."""
    import numpy as np
    import torch

    from spos_hw.nas.data import load_data

    dataset = info.get("dataset")
    if not dataset:
        raise ConfigError(f"checkpoint {str(checkpoint)!r} records no dataset to calibrate on")
    data = load_data(dataset, space)
    idx = np.sort(np.random.default_rng(0).choice(len(data.train), size=min(n, len(data.train)), replace=False))
    images = data.train.fetch(idx)
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(info["std"]).view(1, -1, 1, 1)
    return ((images.float() / 255.0 - mean) / std).numpy()


def metadata(info: dict[str, Any], precision: str) -> dict[str, str]:
    """The ONNX ``metadata_props``: enough for a consumer to preprocess and label correctly."""
    from spos_hw import __version__

    norm = None if info["mean"] is None else {"scale": "1/255", "mean": info["mean"], "std": info["std"]}
    return {
        "spos_hw.version": __version__,
        "spos_hw.arch": info["arch"],
        "spos_hw.arch_json": json.dumps(info["arch_json"]),
        "spos_hw.space": info["space"],
        "spos_hw.space_fingerprint": info["fingerprint"],
        "spos_hw.space_spec": json.dumps(info["space_spec"]),
        "spos_hw.input_shape": json.dumps(info["input_shape"]),
        "spos_hw.normalization": json.dumps(norm),
        "spos_hw.class_names": json.dumps(info["classes"]),
        "spos_hw.precision": precision,
        "spos_hw.weights": info["weights"],
        "spos_hw.dataset": json.dumps(info["dataset"]),
        "spos_hw.test_accuracy": json.dumps(info["test_accuracy"]),
        "spos_hw.preprocess": "x = (uint8 image [N,C,H,W] / 255 - mean[c]) / std[c]; float32 input 'input'",
    }


def verification_inputs(given, checkpoint, info: dict[str, Any], space) -> tuple[Any, str]:
    """``(float inputs, description)``: given ones, real test images, or seeded standard-normal ones."""
    import numpy as np
    import torch

    shape = tuple(space.input_shape)
    if given is not None:
        x = torch.as_tensor(given)
        if x.dim() != 4 or tuple(x.shape[1:]) != shape or not x.is_floating_point():
            raise ConfigError(
                f"verify_inputs must be a float tensor [n, {', '.join(map(str, shape))}], got {tuple(x.shape)} {x.dtype}"
            )
        return x.float(), f"given ({len(x)})"
    dataset = info.get("dataset")
    if checkpoint is not None and dataset in ("fashion-mnist", "digits") and int(np.prod(shape)) <= REAL_INPUT_LIMIT:
        from spos_hw.errors import DataError
        from spos_hw.nas.data import load_data

        try:
            data = load_data(dataset, space)
        except DataError as exc:
            log.warning("verification falls back to random inputs: %s", exc)
        else:
            n = min(VERIFY_COUNT, len(data.test))
            images = data.test.fetch(np.arange(n))
            mean = torch.tensor(info["mean"]).view(1, -1, 1, 1)
            std = torch.tensor(info["std"]).view(1, -1, 1, 1)
            return (images.float() / 255.0 - mean) / std, f"{dataset} test split ({n} images)"
    n = VERIFY_COUNT if int(np.prod(shape)) <= REAL_INPUT_LIMIT else 32
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
    return x, f"seeded random normal ({n})"


def _build_trt(onnx_bytes, out, precision, batch_size, dynamic_batch, timing_cache, x, bar) -> dict[str, Any]:
    """Build, save, run and check a TensorRT engine (after the verified ONNX is written)."""
    import numpy as np

    from spos_hw.deploy.tensorrt import EngineRunner, build_serialized_engine, cuda_index, deserialize, import_tensorrt
    from spos_hw.deploy.verify import ort_session, run_batched
    from spos_hw.io import atomic_write_bytes

    trt = import_tensorrt()
    index = cuda_index()
    logger = trt.Logger(trt.Logger.WARNING)
    batch_range = (1, batch_size, max(batch_size, 64)) if dynamic_batch else None
    engine = build_serialized_engine(
        onnx_bytes,
        trt=trt,
        logger=logger,
        precision=precision,
        strongly_typed=precision == "int8",
        batch_range=batch_range,
        timing_cache=timing_cache,
    )
    bar.update(1)
    res: dict[str, Any] = {"engine": str(out), "tensorrt": trt.__version__, "trt_verified": False}
    if x is not None:
        runner = EngineRunner(deserialize(engine, trt=trt, logger=logger), device_index=index, trt=trt)
        xs = x.numpy()
        step = None if dynamic_batch else batch_size
        ref = run_batched(ort_session(onnx_bytes), xs, step)[0]
        chunks = [xs[i : i + (step or len(xs))] for i in range(0, len(xs), step or len(xs))]
        got = np.concatenate([_padded_run(runner, c, step) for c in chunks])
        diff = float(np.abs(got - ref).max())
        rel = diff / max(float(np.abs(ref).max()), 1e-12)
        agree = float((got.argmax(1) == ref.argmax(1)).mean())
        res.update(trt_max_abs_diff=diff, trt_top1_agreement=agree)
        if rel > TRT_PARITY[precision] or agree < 0.99:
            raise VerificationError(
                f"TensorRT engine does not match ONNX Runtime: max diff {rel:.3g} of the largest logit "
                f"(limit {TRT_PARITY[precision]:g}), top-1 agreement {agree:.2%}; the ONNX is kept at its path"
            )
        res["trt_verified"] = True
    atomic_write_bytes(out, engine)
    bar.update(1)
    res["engine_bytes"] = len(engine)
    return res


def _padded_run(runner, chunk, step):
    import numpy as np

    n = len(chunk)
    if step is not None and n < step:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
    return runner(chunk)[:n]


__all__ = ["FORMATS", "PRECISIONS", "export_model", "load_net", "metadata", "resolve_precision", "verification_inputs"]
