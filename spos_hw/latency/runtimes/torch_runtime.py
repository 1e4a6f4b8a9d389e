"""Eager PyTorch on CPU (wall clock) or CUDA (CUDA events after synchronisation)."""

from __future__ import annotations

from spos_hw.latency.runtimes import Runtime, require_cuda
from spos_hw.protocol import Timer, clock_ns


class TorchRuntime(Runtime):
    name = "torch"
    devices = ("cpu", "cuda")

    def __init__(self, device: str, *, threads: int = 1, clock: str = "wall") -> None:
        super().__init__(device, threads=threads, clock=clock)
        import torch

        if self.device != "cpu":
            require_cuda(self.device)
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def close(self) -> None:
        import torch

        torch.set_num_threads(self._saved_threads)

    def version(self) -> str:
        import torch

        return torch.__version__

    def options(self) -> dict:
        timing = {"wall": "perf_counter", "thread": "thread_time"}[self.clock] if self.device == "cpu" else "cuda_events"
        return {"mode": "eager", "inference_mode": True, "timing": timing}

    def timer(self, module, input_shape: tuple[int, ...]) -> Timer:
        import torch

        gen = torch.Generator().manual_seed(0)
        x = torch.randn(*input_shape, generator=gen).to(self.device)
        module = module.to(self.device).eval()
        if self.device == "cpu":
            return _cpu_timer(module, x, clock_ns(self.clock))
        return _cuda_timer(module, x)


def _cpu_timer(module, x, clock) -> Timer:
    import torch

    def timer(n: int) -> list[float]:
        out = [0.0] * n
        with torch.inference_mode():
            for i in range(n):
                t = clock()
                module(x)
                out[i] = (clock() - t) / 1e6
        return out

    return timer


def _cuda_timer(module, x) -> Timer:
    import torch

    def timer(n: int) -> list[float]:
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        torch.cuda.synchronize(x.device)
        with torch.inference_mode():
            for s, e in zip(starts, ends):
                s.record()
                module(x)
                e.record()
        torch.cuda.synchronize(x.device)
        return [s.elapsed_time(e) for s, e in zip(starts, ends)]

    return timer
