"""ONNX Runtime: CPU execution provider, or the CUDA EP when onnxruntime-gpu provides it.

Modules are exported with the shared helper (``spos_hw.deploy.onnx``); sessions and timers
come from ``latency.protocol`` (the same code a board bundle runs): fixed intra-op threads,
``session.intra_op.allow_spinning=0``, sequential execution, IOBinding.
"""

from __future__ import annotations

from spos_hw.errors import MissingDependency, RuntimeUnavailable
from spos_hw.latency.runtimes import Runtime
from spos_hw.protocol import Timer, ort_runtime_record, ort_session, ort_timer


class OrtRuntime(Runtime):
    name = "onnxruntime"
    devices = ("cpu", "cuda")
    uses_onnx = True

    def __init__(self, device: str, *, threads: int = 1, clock: str = "wall") -> None:
        super().__init__(device, threads=threads, clock=clock)
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependency("onnxruntime is not installed; pip install onnxruntime") from None
        if self.device != "cpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeUnavailable(
                f"onnxruntime on {self.device} needs the CUDA execution provider (pip install onnxruntime-gpu); "
                f"this install has {', '.join(ort.get_available_providers())}"
            )

    def version(self) -> str:
        import onnxruntime as ort

        return ort.__version__

    def options(self) -> dict:
        return ort_runtime_record(self.device, self.threads)["options"]

    def record(self) -> dict:
        rec = super().record()
        rec["providers"] = ort_runtime_record(self.device, self.threads)["providers"]
        return rec

    def timer(self, module, input_shape: tuple[int, ...]) -> Timer:
        import torch

        from spos_hw.deploy.onnx import export_onnx

        x = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
        return self.timer_from_onnx(export_onnx(module.eval(), (x,)).SerializeToString())

    def timer_from_onnx(self, model: bytes) -> Timer:
        return ort_timer(ort_session(model, threads=self.threads, device=self.device), device=self.device, clock=self.clock)
