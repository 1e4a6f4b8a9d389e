"""TensorRT engines from ONNX: the one engine-building path (``spos-hw export --format trt`` and the
latency runtime ``tensorrt`` both use it).

Written against the real ``tensorrt`` Python API (TensorRT 10/11): ``OnnxParser``,
``build_serialized_network``, strongly typed networks for explicit-quantization (Q/DQ)
models, an optimization profile for a dynamic batch, a timing cache, and ``execute_async_v3``
with torch CUDA tensors as buffers (no other CUDA binding needed). ``tensorrt`` is imported
lazily; without it, ``import_tensorrt`` raises a one-line ``MissingDependency`` naming the
package and the ``trt`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from spos_hw.errors import MissingDependency, RuntimeUnavailable

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line ``MissingDependency``."""
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency(
            "TensorRT is not installed: the 'tensorrt' package is needed; pip install 'spos-hw[trt]' (or pip install tensorrt)"
        ) from None
    return tensorrt


def build_serialized_engine(
    model: bytes,
    *,
    trt: Any = None,
    logger: Any = None,
    precision: str = "fp32",
    strongly_typed: bool = False,
    batch_range: tuple[int, int, int] | None = None,
    timing_cache: str | Path | None = None,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> bytes:
    """Parse ONNX bytes and build a serialized engine.

    Args:
        model: the ONNX model.
        trt, logger: the ``tensorrt`` module and a ``trt.Logger`` (defaults: imported / WARNING).
        precision: ``fp32`` or ``fp16`` (the FP16 builder flag; ignored for strongly typed networks,
            whose types come from the model).
        strongly_typed: build a strongly typed network (what Q/DQ models need on TensorRT 10+).
        batch_range: ``(min, opt, max)`` batch of an optimization profile for inputs whose dim 0 is
            dynamic; ``None`` for static shapes.
        timing_cache: a file to read the timing cache from (if it exists) and write it back to.
        workspace_bytes: the builder's workspace memory pool limit.
    """
    trt = trt or import_tensorrt()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        if not hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
            raise RuntimeUnavailable(f"TensorRT {trt.__version__} cannot build strongly typed networks (needs TensorRT 10+)")
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeUnavailable(f"TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16" and not strongly_typed:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise RuntimeUnavailable(
                f"TensorRT {trt.__version__} has no FP16 builder flag; export with --precision fp16 to an fp16 ONNX"
            )
        config.set_flag(trt.BuilderFlag.FP16)
    if batch_range is not None:
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            rest = tuple(tensor.shape)[1:]
            lo, opt, hi = batch_range
            profile.set_shape(tensor.name, (lo, *rest), (opt, *rest), (hi, *rest))
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache is not None else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeUnavailable("TensorRT failed to build an engine for the model (see its log above)")
    if cache_path is not None:
        from spos_hw.io import atomic_write_bytes

        atomic_write_bytes(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def deserialize(engine: bytes, *, trt: Any = None, logger: Any = None):
    trt = trt or import_tensorrt()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    out = trt.Runtime(logger).deserialize_cuda_engine(engine)
    if out is None:
        raise RuntimeUnavailable("TensorRT could not deserialize the engine (built by another TensorRT version or GPU?)")
    return out


class EngineRunner:
    """Run a deserialized engine on CUDA with torch tensors as I/O buffers (one input, one output)."""

    def __init__(self, engine, *, device_index: int = 0, trt: Any = None) -> None:
        import torch

        self.trt = trt or import_tensorrt()
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = torch.device("cuda", device_index)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = self.trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == mode]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) != mode]
        self.stream = torch.cuda.Stream(self.device)

    def _dtype(self, name: str):
        import torch

        return torch.from_numpy(np.empty(0, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))).dtype

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        (iname,) = self.inputs
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self._dtype(iname)).to(self.device)
        self.context.set_input_shape(iname, tuple(xt.shape))
        self.context.set_tensor_address(iname, xt.data_ptr())
        outs = []
        for name in self.outputs:
            t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device=self.device)
            self.context.set_tensor_address(name, t.data_ptr())
            outs.append(t)
        torch.cuda.synchronize(self.device)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeUnavailable("TensorRT execution failed")
        self.stream.synchronize()
        return outs[0].float().cpu().numpy()


def cuda_index() -> int:
    """CUDA device 0, or a one-line ``RuntimeUnavailable`` when torch sees no GPU."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailable("TensorRT engines need a CUDA GPU, and torch sees none on this machine")
    return 0


__all__ = ["WORKSPACE_BYTES", "EngineRunner", "build_serialized_engine", "cuda_index", "deserialize", "import_tensorrt"]
