"""TensorRT (CUDA only): parse each block's ONNX, build an engine, time it with CUDA events.

Engines come from ``spos_hw.deploy.tensorrt`` (the one engine-building path: real ``tensorrt``
API, ``build_serialized_network``); timing uses ``execute_async_v3`` with torch CUDA tensors
as buffers and a torch CUDA stream, so it needs no other CUDA binding. Imported lazily: without
TensorRT installed the runtime is a one-line ``MissingDependency`` naming the package and the
``trt`` extra.
"""

from __future__ import annotations

from spos_hw.deploy.tensorrt import WORKSPACE_BYTES, build_serialized_engine, deserialize, import_tensorrt
from spos_hw.errors import RuntimeUnavailable
from spos_hw.latency.runtimes import Runtime, require_cuda
from spos_hw.protocol import Timer


class TensorRTRuntime(Runtime):
    name = "tensorrt"
    devices = ("cuda",)
    uses_onnx = True

    def __init__(self, device: str, *, threads: int = 1, clock: str = "wall") -> None:
        super().__init__(device, threads=threads, clock=clock)
        self.index = require_cuda(self.device)
        self.trt = import_tensorrt()
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._engines: list = []  # keep engines and contexts alive while timers exist

    def version(self) -> str:
        return self.trt.__version__

    def options(self) -> dict:
        return {
            "precision": "fp32 (explicit Q/DQ where the model has it)",
            "workspace_bytes": WORKSPACE_BYTES,
            "timing": "cuda_events",
            "api": "execute_async_v3",
        }

    def timer(self, module, input_shape: tuple[int, ...]) -> Timer:
        import torch

        from spos_hw.deploy.onnx import export_onnx

        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        return self.timer_from_onnx(export_onnx(module.eval().cpu(), (x,)).SerializeToString())

    def build_engine(self, model: bytes):
        """Parse ONNX bytes and build a deserialized engine (``spos_hw.deploy.tensorrt``)."""
        from spos_hw.deploy.trt_check import has_qdq

        serialized = build_serialized_engine(model, trt=self.trt, logger=self.logger, strongly_typed=has_qdq(model))
        return deserialize(serialized, trt=self.trt, logger=self.logger)

    def timer_from_onnx(self, model: bytes) -> Timer:
        import numpy as np
        import torch

        trt = self.trt
        engine = self.build_engine(model)
        context = engine.create_execution_context()
        device = torch.device("cuda", self.index)
        gen = torch.Generator().manual_seed(0)
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = torch.from_numpy(np.empty(0, dtype=trt.nptype(engine.get_tensor_dtype(name)))).dtype
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                t = torch.randn(shape, generator=gen).to(dtype).to(device)
            else:
                t = torch.empty(shape, dtype=dtype, device=device)
            context.set_tensor_address(name, t.data_ptr())
            buffers.append(t)
        stream = torch.cuda.Stream(device)
        self._engines.append((engine, context, buffers, stream))

        def timer(n: int) -> list[float]:
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            torch.cuda.synchronize(device)
            for s, e in zip(starts, ends):
                s.record(stream)
                if not context.execute_async_v3(stream.cuda_stream):
                    raise RuntimeUnavailable("TensorRT execution failed")
                e.record(stream)
            stream.synchronize()
            return [s.elapsed_time(e) for s, e in zip(starts, ends)]

        return timer

    def close(self) -> None:
        self._engines.clear()
