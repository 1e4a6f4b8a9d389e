"""Runtimes that time a module on a device: torch (cpu, cuda), onnxruntime (cpu, cuda EP),
tensorrt (cuda). One module each, one small interface (``Runtime``).

A runtime is a context manager: it fixes thread counts (and restores them on exit). ``timer``
prepares one module for its input shape and returns ``timer(n) -> n run times in ms``; the
ONNX-based runtimes export it with ``spos_hw.deploy.onnx`` first.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from typing import Any, ClassVar

from spos_hw.errors import RuntimeUnavailable
from spos_hw.protocol import Protocol, Timer

RUNTIMES = ("torch", "onnxruntime", "tensorrt")


def parse_device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` in canonical form (``cuda`` -> ``cuda:0``)."""
    m = re.fullmatch(r"\s*(cpu|cuda)(?::(\d+))?\s*", str(text))
    if not m or (m.group(1) == "cpu" and m.group(2) is not None):
        raise RuntimeUnavailable(f"unknown device {text!r}; use cpu, cuda or cuda:N")
    return "cpu" if m.group(1) == "cpu" else f"cuda:{int(m.group(2) or 0)}"


def require_cuda(device: str) -> int:
    """The CUDA index of ``device``; a one-line error when torch sees no such GPU."""
    import torch

    index = int(device.partition(":")[2] or 0)
    if not torch.cuda.is_available():
        raise RuntimeUnavailable(f"device {device} requested but CUDA is not available on this machine")
    if index >= torch.cuda.device_count():
        raise RuntimeUnavailable(f"device {device} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return index


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are left out) and Python's."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


class Runtime:
    """Base of the runtimes. Subclasses set ``name``, ``devices`` and implement ``timer``."""

    name: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    uses_onnx: ClassVar[bool] = False

    def __init__(self, device: str, *, threads: int = 1, clock: str = "wall") -> None:
        if not isinstance(threads, int) or threads < 1:
            raise RuntimeUnavailable(f"threads must be an integer >= 1, got {threads!r}")
        self.device = parse_device(device)
        self.threads = threads
        self.clock = clock
        if self.device.partition(":")[0] not in self.devices:
            allowed = " or ".join(self.devices)
            raise RuntimeUnavailable(f"runtime {self.name} cannot run on {self.device}; it needs --device {allowed}")
        Protocol(clock=clock).check_for(self.device, threads)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Restore any global state changed for measuring (thread counts)."""

    def version(self) -> str:
        raise NotImplementedError

    def device_name(self) -> str:
        from spos_hw.protocol import cpu_name

        if self.device == "cpu":
            return cpu_name()
        import torch

        index = int(self.device.partition(":")[2])
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return torch.cuda.get_device_name(index)
        return f"CUDA device {index}"  # e.g. onnxruntime-gpu beside a CPU-only torch

    def options(self) -> dict:
        return {}

    def record(self) -> dict:
        """What a table records about this runtime."""
        return {
            "name": self.name,
            "version": self.version(),
            "device": self.device,
            "device_name": self.device_name(),
            "threads": self.threads,
            "clock": self.clock,
            "options": self.options(),
        }

    def libraries(self) -> dict[str, str]:
        return library_versions("torch", "numpy", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt")

    def timer(self, module, input_shape: tuple[int, ...]) -> Timer:
        """Prepare ``module`` (eval mode, ``forward(x)``) for inputs of ``input_shape``."""
        raise NotImplementedError

    def timer_from_onnx(self, model: bytes) -> Timer:
        raise RuntimeUnavailable(f"runtime {self.name} does not run ONNX models")


def get_runtime(name: str, device: str = "cpu", *, threads: int = 1, clock: str = "wall") -> Runtime:
    """The runtime ``name`` on ``device``; unknown names and impossible pairs are one-line errors."""
    if name == "torch":
        from spos_hw.latency.runtimes.torch_runtime import TorchRuntime as cls
    elif name == "onnxruntime":
        from spos_hw.latency.runtimes.ort_runtime import OrtRuntime as cls
    elif name == "tensorrt":
        from spos_hw.latency.runtimes.trt_runtime import TensorRTRuntime as cls
    else:
        raise RuntimeUnavailable(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return cls(device, threads=threads, clock=clock)


__all__ = ["RUNTIMES", "Runtime", "get_runtime", "library_versions", "parse_device", "require_cuda"]
