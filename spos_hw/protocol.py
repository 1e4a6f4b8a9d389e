"""The timing protocol and ONNX Runtime timing. Self-contained: stdlib + numpy (+ onnxruntime).

Every runtime is timed through ``measure`` (interleaved rounds, warm-up, fixed threads), and
the ONNX Runtime session and timer defined here are the ones the profiler uses. The file is
also shipped *verbatim* as the runner of a board bundle (``spos-hw profile --export-bundle``),
so a phone or a Raspberry Pi measures with exactly the same code and needs only onnxruntime
and numpy. Keep it free of torch and of spos_hw imports.

Protocol: every entry gets ``warmup`` untimed runs, then ``rounds`` rounds; in each round
every entry gets one *turn* (``turn_warmup`` untimed runs and then more until ``turn_warmup_ms``
have passed, then ``repeats`` timed back-to-back runs) in a shuffled order, so drift and
neighbours' load hit all entries alike while every timed run finds the entry warm: its weights
back in cache after the other entries ran, and the core busy again after the bookkeeping
between turns (a fixed number of runs is microseconds for a small block).
An entry's latency is the ``statistic`` of its ``rounds x repeats`` samples: ``min`` by default
(interference from other processes only ever adds time; on a shared machine the minimum is
far more repeatable than the median), or ``median`` on a quiet, dedicated device. Median,
quartiles, MAD and n are recorded either way.

Runner usage (inside an unpacked bundle)::

    python run_latency.py [--threads T] [--out measurements.json] [--resume]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

try:  # inside the package, bad input is a SposHwError (one line in the CLI); standalone, a ValueError
    from spos_hw.errors import SposHwError as _Base
except ImportError:  # pragma: no cover - the standalone runner
    _Base = Exception

BUNDLE_SCHEMA = "spos-hw/latency-bundle"
MEASUREMENTS_SCHEMA = "spos-hw/latency-measurements"
SCHEMA_VERSION = 1
STATISTICS = ("min", "median")
CLOCKS = ("wall", "thread")

Timer = Callable[[int], Sequence[float]]
"""``timer(n)`` runs the model ``n`` times back to back and returns each run's time in ms."""


class ProtocolError(ValueError, _Base):
    """A bad protocol parameter or a bad bundle / measurements file."""


@dataclass(frozen=True)
class Protocol:
    """How each entry is timed (recorded in every table)."""

    warmup: int = 10
    """Untimed runs of every entry before the first round."""
    rounds: int = 20
    """Interleaved rounds; each entry gets one turn per round."""
    repeats: int = 10
    """Timed back-to-back runs per turn."""
    turn_warmup: int = 2
    """Untimed runs at the start of each turn (refill caches after the other entries ran)."""
    turn_warmup_ms: float = 5.0
    """...and more untimed runs until this much time (on the protocol's clock) has passed in the
    turn's warm-up (tables written before this field existed used 0)."""
    statistic: str = "min"
    """Which statistic of the samples is the entry's latency: ``min`` or ``median``."""
    clock: str = "wall"
    """``wall`` (``perf_counter``; CUDA events on GPUs) or ``thread``: the CPU time of the thread
    running the model (``thread_time``). With one intra-op thread on a CPU the model runs on
    the calling thread, so ``thread`` is the latency the run would have on a core of its own:
    time the OS gives to other processes is not counted. Only valid for single-threaded CPU runs."""

    def __post_init__(self) -> None:
        for f in ("warmup", "turn_warmup"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 0:
                raise ProtocolError(f"protocol {f} must be an integer >= 0, got {getattr(self, f)!r}")
        if not isinstance(self.turn_warmup_ms, (int, float)) or isinstance(self.turn_warmup_ms, bool) or self.turn_warmup_ms < 0:
            raise ProtocolError(f"protocol turn_warmup_ms must be a number >= 0, got {self.turn_warmup_ms!r}")
        for f in ("rounds", "repeats"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ProtocolError(f"protocol {f} must be an integer >= 1, got {getattr(self, f)!r}")
        if self.statistic not in STATISTICS:
            raise ProtocolError(f"protocol statistic must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.clock not in CLOCKS:
            raise ProtocolError(f"protocol clock must be one of {', '.join(CLOCKS)}, got {self.clock!r}")

    def check_for(self, device: str, threads: int) -> None:
        """The thread clock only measures latency when the model runs on the calling thread."""
        if self.clock == "thread" and (device != "cpu" or threads != 1):
            raise ProtocolError(
                f"the thread clock needs a single-threaded CPU run (got {device}, {threads} threads); use the wall clock"
            )

    @property
    def samples(self) -> int:
        return self.rounds * self.repeats

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: Mapping) -> Protocol:
        names = {f.name for f in fields(Protocol)}
        if not isinstance(d, Mapping) or set(d) - names:
            raise ProtocolError(f"bad protocol record {d!r}; expected keys {sorted(names)}")
        return Protocol(**{"turn_warmup_ms": 0.0, **d})  # a record older than the field measured without it


def default_clock(device: str, threads: int) -> str:
    """``thread`` for single-threaded CPU runs (robust to other processes), else ``wall``."""
    return "thread" if device == "cpu" and threads == 1 else "wall"


def clock_ns(clock: str) -> Callable[[], int]:
    return time.thread_time_ns if clock == "thread" else time.perf_counter_ns


def summarize(times: Sequence[float]) -> dict:
    """Statistics of one entry's samples (ms): n, min, p10, median, mean, p90, iqr, mad."""
    v = np.asarray(times, dtype=np.float64).ravel()
    if v.size == 0:
        raise ProtocolError("no samples to summarize")
    q10, q25, q50, q75, q90 = np.percentile(v, [10, 25, 50, 75, 90])
    return {
        "n": int(v.size),
        "min": float(v.min()),
        "p10": float(q10),
        "median": float(q50),
        "mean": float(v.mean()),
        "p90": float(q90),
        "iqr": float(q75 - q25),
        "mad": float(np.median(np.abs(v - q50))),
    }


def flatten(turns: Sequence[Sequence[float]]) -> list[float]:
    return [float(t) for turn in turns for t in turn]


def measure(
    timers: Mapping[str, Timer],
    protocol: Protocol,
    *,
    samples: Mapping[str, Sequence[Sequence[float]]] | None = None,
    on_turn: Callable[[str, dict], None] | None = None,
) -> dict[str, list[list[float]]]:
    """Time every entry of ``timers`` by the protocol; return ``key -> [turn samples (ms)]``.

    ``samples`` holds turns already finished (a resumed run): they are kept and not repeated.
    ``on_turn(key, samples)`` is called after every finished turn (checkpointing, progress).
    """
    done: dict[str, list[list[float]]] = {k: [list(map(float, t)) for t in (samples or {}).get(k, [])] for k in timers}
    pending = [k for k in timers if len(done[k]) < protocol.rounds]
    for k in pending:
        if protocol.warmup:
            timers[k](protocol.warmup)
    for r in range(protocol.rounds):
        order = list(timers)
        random.Random(r).shuffle(order)
        for k in order:
            if len(done[k]) > r:
                continue
            timer = timers[k]
            if protocol.turn_warmup:
                timer(protocol.turn_warmup)
            now = clock_ns(protocol.clock)  # the protocol's clock: CPU time of this thread, or wall time
            deadline = now() + int(protocol.turn_warmup_ms * 1e6)
            while now() < deadline:
                timer(1)
            done[k].append([round(float(t), 6) for t in timer(protocol.repeats)])
            if on_turn is not None:
                on_turn(k, done)
    return done


# ----------------------------------------------------------------------------- machine


def cpu_name() -> str:
    """The CPU model as the OS names it (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


# ----------------------------------------------------------------------------- ONNX Runtime


def ort_providers(device: str) -> list:
    """Execution providers for ``cpu`` or ``cuda[:N]`` (CUDA EP first, CPU for the rest)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    index = int(device.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]


ORT_LEVELS = ("disable", "basic", "extended", "all")


def ort_session(model, *, threads: int, device: str = "cpu", level: str = "all"):
    """An ``InferenceSession`` with fixed threads, no spinning and sequential execution.

    ``model`` is a path or the serialized ONNX bytes; ``level`` the graph optimization level
    (one of ``ORT_LEVELS``; measurements use ``all``).
    """
    import onnxruntime as ort

    levels = dict(
        zip(
            ORT_LEVELS,
            (
                ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            ),
        )
    )

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[level]
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(model, so, providers=ort_providers(device))


def ort_session_options(threads: int) -> dict:
    """The session settings ``ort_session`` uses, as recorded in tables."""
    return {
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": "all",
        "session.intra_op.allow_spinning": "0",
        "io_binding": True,
    }


_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
}


def ort_timer(session, *, device: str = "cpu", clock: str = "wall", seed: int = 0) -> Timer:
    """A timer running ``session`` on fixed random inputs through an IOBinding (no copies per run).

    Outputs are preallocated, so a run is exactly one ``run_with_iobinding`` call, timed with
    the protocol's clock (ORT returns after the device has finished, CUDA EP included).
    """
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    dev, index = ("cpu", 0) if device == "cpu" else ("cuda", int(device.partition(":")[2] or 0))
    feeds, binding = {}, session.io_binding()
    for inp in session.get_inputs():
        if not all(isinstance(d, int) and d > 0 for d in inp.shape):
            raise ProtocolError(f"model input {inp.name!r} has a dynamic shape {inp.shape}; export with static shapes")
        dtype = _ORT_TYPES.get(inp.type)
        if dtype is None:
            raise ProtocolError(f"model input {inp.name!r} has unsupported type {inp.type}")
        feeds[inp.name] = rng.standard_normal(inp.shape).astype(dtype)
        binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(feeds[inp.name], dev, index))
    outputs = session.run(None, feeds)
    keep = []
    for out, value in zip(session.get_outputs(), outputs):
        ov = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), value.dtype, dev, index)
        binding.bind_ortvalue_output(out.name, ov)
        keep.append(ov)
    binding.synchronize_inputs()
    run, clock = session.run_with_iobinding, clock_ns(clock)

    def timer(n: int) -> list[float]:
        out = [0.0] * n
        for i in range(n):
            t = clock()
            run(binding)
            out[i] = (clock() - t) / 1e6
        return out

    timer.keep_alive = (binding, keep)  # type: ignore[attr-defined]
    return timer


def ort_runtime_record(device: str, threads: int) -> dict:
    """What a table records about an ONNX Runtime measurement on this machine."""
    import onnxruntime as ort

    return {
        "name": "onnxruntime",
        "version": ort.__version__,
        "device": device,
        "device_name": cpu_name() if device == "cpu" else f"CUDA device {device}",
        "threads": threads,
        "providers": [p if isinstance(p, str) else p[0] for p in ort_providers(device)],
        "options": ort_session_options(threads),
    }


def machine_record() -> dict:
    return {"host": platform.node(), "platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count()}


# ----------------------------------------------------------------------------- bundle runner


def _write_json(path: str, obj) -> None:
    """Atomic JSON write (temp file + fsync + rename); standalone twin of ``spos_hw.io``."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".meas.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise ProtocolError(f"{what} {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} {path!r} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} {path!r} is not a JSON object")
    return obj


def run_bundle(
    folder: str,
    *,
    out: str,
    threads: int | None = None,
    resume: bool = False,
    checkpoint_s: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Measure every model of an unpacked bundle and write the measurements file ``out``."""
    manifest = _read_json(os.path.join(folder, "manifest.json"), "bundle manifest")
    if manifest.get("schema") != BUNDLE_SCHEMA or manifest.get("version") != SCHEMA_VERSION:
        raise ProtocolError(f"{folder!r} is not a spos-hw latency bundle (schema {manifest.get('schema')!r})")
    protocol = Protocol.from_json(manifest["protocol"])
    threads = int(threads or manifest.get("threads") or 1)
    if threads < 1:
        raise ProtocolError(f"--threads must be >= 1, got {threads}")
    protocol.check_for("cpu", threads)
    samples: dict = {}
    if os.path.exists(out):
        if not resume:
            raise ProtocolError(f"{out!r} already exists; pass --resume to continue it")
        previous = _read_json(out, "measurements file")
        if previous.get("manifest_id") != manifest["id"] or previous.get("runtime", {}).get("threads") != threads:
            raise ProtocolError(f"{out!r} belongs to another bundle or thread count; move it away to start over")
        samples = previous.get("samples", {})
    record = {
        "schema": MEASUREMENTS_SCHEMA,
        "version": SCHEMA_VERSION,
        "manifest_id": manifest["id"],
        "manifest": manifest,
        "runtime": ort_runtime_record("cpu", threads),
        "machine": machine_record(),
        "libraries": {
            "onnxruntime": __import__("onnxruntime").__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        "complete": False,
    }
    timers = {}
    for unit in manifest["units"]:
        session = ort_session(os.path.join(folder, unit["file"]), threads=threads)
        timers[unit["key"]] = ort_timer(session, clock=protocol.clock)
    total = len(timers) * protocol.rounds
    state = {"last": time.monotonic(), "done": sum(min(len(samples.get(k, [])), protocol.rounds) for k in timers)}

    def on_turn(key: str, done: dict) -> None:
        state["done"] += 1
        if log:
            log(f"\rmeasured {state['done']}/{total} turns")
        if time.monotonic() - state["last"] >= checkpoint_s:
            _write_json(out, {**record, "samples": done, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            state["last"] = time.monotonic()

    done = measure(timers, protocol, samples=samples, on_turn=on_turn)
    record.update(samples=done, complete=True, date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _write_json(out, record)
    if log:
        log("\n")
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the bundle runner (``python run_latency.py``)."""
    ap = argparse.ArgumentParser(description="Measure a spos-hw latency bundle with ONNX Runtime (CPU).")
    ap.add_argument("--bundle", default=os.path.dirname(os.path.abspath(__file__)), help="bundle folder (default: this file's)")
    ap.add_argument("--out", default="measurements.json", help="measurements file to write")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the bundle's)")
    ap.add_argument("--resume", action="store_true", help="continue a partial measurements file")
    args = ap.parse_args(argv)
    try:
        run_bundle(
            args.bundle,
            out=args.out,
            threads=args.threads,
            resume=args.resume,
            log=lambda s: (sys.stderr.write(s), sys.stderr.flush()),
        )
    except ProtocolError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; rerun with --resume to continue\n")
        return 130
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
