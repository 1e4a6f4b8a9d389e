"""``profile_space``: measure a space's latency table on a runtime, with calibration and resume.

Every distinct block signature, the stem, the head and ``calibrate`` whole subnets are prepared
(exported to ONNX for ONNX-based runtimes), then timed together by the interleaved protocol
(``latency.protocol.measure``), so the calibration subnets see the same machine state as the
blocks. The partial table is written atomically during measuring; ``resume=True`` continues it
without repeating a finished turn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from spos_hw.errors import ArtifactMismatch, SposHwError
from spos_hw.io import check_new_output
from spos_hw.latency import calibration
from spos_hw.latency.runtimes import Runtime, get_runtime, parse_device
from spos_hw.latency.table import LatencyTable
from spos_hw.latency.units import HEAD, NET_PREFIX, STEM, Unit, net_key, net_unit, table_units
from spos_hw.nas.space import SearchSpace
from spos_hw.protocol import Protocol, Timer, default_clock, flatten, machine_record, measure, summarize

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION = 10


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def check_int(name: str, value, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise SposHwError(f"{name} must be an integer >= {lo}, got {value!r}")


def onnx_export_record() -> dict:
    from spos_hw.deploy.onnx import DEFAULT_OPSET

    return {"format": "onnx", "opset": DEFAULT_OPSET, "exporter": "torch.onnx.export(dynamo=True)"}


def new_table(
    space: SearchSpace,
    rt_record: dict,
    libraries: dict,
    *,
    batch_size: int,
    protocol: Protocol,
    calibrate: int,
    seed: int,
    export: dict,
    source: str = "profile",
    machine: dict | None = None,
) -> LatencyTable:
    """An empty (partial) table with its header and its calibration subnets chosen."""
    archs = calibration.calibration_archs(space, calibrate, np.random.default_rng(seed))
    return LatencyTable(
        space={"name": space.name, "fingerprint": space.fingerprint, "spec": space.to_json()},
        input_shape=list(space.input_shape),
        batch_size=batch_size,
        runtime=rt_record,
        protocol=protocol,
        libraries=libraries,
        machine=machine if machine is not None else machine_record(),
        export=export,
        created=_now(),
        source=source,
        seed=seed,
        calibration_archs=[str(a) for a in archs],
        samples={},
    )


def finish_table(table: LatencyTable, space: SearchSpace, samples: dict[str, list[list[float]]]) -> LatencyTable:
    """Summarize the samples into entries, fit the calibration, mark the table complete."""
    from spos_hw.latency.predictor import table_cost

    table.entries, table.fixed = {}, {}
    for key, turns in samples.items():
        if key.startswith(NET_PREFIX):
            continue
        stats = summarize(flatten(turns))
        (table.fixed if key in (STEM, HEAD) else table.entries)[key] = stats
    raw = table_cost(table, space)
    archs = [space.arch(a) for a in table.calibration_archs]
    nets = [summarize(flatten(samples[net_key(a)])) for a in archs]
    sums = raw.cost(space.encode(archs)) if archs else np.zeros(0)
    measured = np.array([table.latency(s) for s in nets])
    table.calibration = {
        **calibration.fit(sums, measured, domain=raw.bounds()),
        "archs": [str(a) for a in archs],
        "table_ms": [float(v) for v in sums],
        "measured_ms": [float(v) for v in measured],
        "measured": nets,
        "split_half_retest_pct": split_half_noise([samples[net_key(a)] for a in archs], table.protocol.statistic),
    }
    table.samples = None
    table.complete = True
    table.created = _now()
    return table


def split_half_noise(nets: Sequence[list[list[float]]], statistic: str) -> float | None:
    """The machine's re-test noise, from the measurement itself: each whole net's statistic over its
    even rounds against its odd rounds (mean relative difference, %). Two separate passes would
    cost a second measurement; the halves were interleaved the same way."""
    stat = np.min if statistic == "min" else np.median
    diffs = []
    for turns in nets:
        even, odd = flatten(turns[0::2]), flatten(turns[1::2])
        if even and odd:
            a, b = float(stat(even)), float(stat(odd))
            diffs.append(abs(a - b) / min(a, b))
    return float(np.mean(diffs) * 100) if diffs else None


def unit_models(space: SearchSpace, units: Sequence[Unit], *, progress: bool = False) -> dict:
    """``key -> onnx.ModelProto`` for every unit: blocks exported in batches, nets composed from them."""
    from spos_hw.latency.onnx_units import compose_net, export_units

    needed: dict[str, Unit] = {u.key: u for u in units if u.kind != "net"}
    if any(u.kind == "net" for u in units):  # nets are chained from the stem, block and head models
        needed.update({u.key: u for u in table_units(space, units[0].input_shape[0])})
    models = export_units(list(needed.values()), progress=progress)
    for u in units:
        if u.kind == "net":
            models[u.key] = compose_net(space, u.arch, models)
    return models


def prepare_timers(runtime: Runtime, space: SearchSpace, units: Sequence[Unit], *, progress: bool = False) -> dict[str, Timer]:
    """Make every unit's timer: ONNX runtimes get the unit models, torch the modules."""
    from tqdm.auto import tqdm

    if runtime.uses_onnx:
        models = unit_models(space, units, progress=progress)
        items = [(u.key, lambda u=u: runtime.timer_from_onnx(models[u.key].SerializeToString())) for u in units]
    else:
        items = [(u.key, lambda u=u: runtime.timer(u.build(), u.input_shape)) for u in units]
    return {key: make() for key, make in tqdm(items, desc="prepare", unit="model", disable=not progress, leave=False)}


def run_protocol(
    timers: dict[str, Timer],
    protocol: Protocol,
    *,
    samples: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    checkpoint_s: float = 2.0,
    progress: bool = False,
    desc: str = "measure",
) -> dict[str, list[list[float]]]:
    """``protocol.measure`` with a progress bar and a checkpoint at most every ``checkpoint_s`` seconds."""
    from tqdm.auto import tqdm

    done0 = sum(min(len((samples or {}).get(k, [])), protocol.rounds) for k in timers)
    bar = tqdm(total=len(timers) * protocol.rounds, initial=done0, desc=desc, unit="turn", disable=not progress, leave=False)
    last = [time.monotonic()]

    def on_turn(key: str, done: dict) -> None:
        bar.update(1)
        if checkpoint is not None and time.monotonic() - last[0] >= checkpoint_s:
            checkpoint(done)
            last[0] = time.monotonic()

    try:
        return measure(timers, protocol, samples=samples, on_turn=on_turn)
    finally:
        bar.close()


def _resume_check(table: LatencyTable, space: SearchSpace, want: dict) -> None:
    table.check(space, batch_size=want["batch_size"], what="the table to resume")
    have = {
        "runtime": table.runtime.get("name"),
        "device": table.runtime.get("device"),
        "threads": table.runtime.get("threads"),
        "protocol": table.protocol,
        "calibration subnets": len(table.calibration_archs),
        "seed": table.seed,
    }
    diffs = [f"{k} {have[k]!r} (asked {want[k]!r})" for k in have if have[k] != want[k]]
    if diffs:
        raise ArtifactMismatch("cannot resume: the partial table was started with " + "; ".join(diffs))


def profile_space(
    space: SearchSpace,
    *,
    runtime: str | Runtime = "onnxruntime",
    device: str = "cpu",
    threads: int = 1,
    batch_size: int = 1,
    calibrate: int = DEFAULT_CALIBRATION,
    protocol: Protocol | None = None,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    checkpoint_s: float = 2.0,
    progress: bool = False,
) -> LatencyTable:
    """Measure ``space``'s latency table; write it to ``out`` (atomically, during and after).

    Args:
        runtime: ``torch``, ``onnxruntime``, ``tensorrt`` or a ``Runtime`` instance.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (ignored when ``runtime`` is an instance).
        threads: intra-op threads (CPU), fixed for the whole run and recorded.
        calibrate: whole subnets measured to fit the calibration (0: none).
        protocol: timing protocol (default ``Protocol()`` with the thread clock for single-threaded CPU runs).
        seed: picks the calibration subnets.
        resume: continue the partial table at ``out``; finished turns are not measured again.
        checkpoint_s: the partial table is rewritten at most this often (a kill loses at most this much).
    """
    check_int("batch size", batch_size, 1)
    check_int("calibrate", calibrate, 0)
    check_int("threads", threads, 1)
    if isinstance(runtime, Runtime):
        device, threads = runtime.device, runtime.threads
    protocol = protocol or Protocol(clock=default_clock(parse_device(device), threads))
    protocol.check_for(parse_device(device), threads)
    if out is not None:
        check_new_output(out, overwrite=overwrite, resume=resume)
    previous = None
    if out is not None and resume and os.path.exists(out):
        previous = LatencyTable.load(out, allow_partial=True)
    rt = runtime if isinstance(runtime, Runtime) else get_runtime(runtime, device, threads=threads, clock=protocol.clock)
    rt.clock = protocol.clock
    with rt:
        if previous is not None:
            want = {
                "runtime": rt.name,
                "device": rt.device,
                "threads": rt.threads,
                "protocol": protocol,
                "calibration subnets": calibrate,
                "seed": seed,
                "batch_size": batch_size,
            }
            _resume_check(previous, space, want)
            if previous.complete:
                log.info("%s is already complete; nothing to resume", out)
                return previous
            table = previous
            log.info("resuming %s: %d finished turns kept", out, sum(len(t) for t in (table.samples or {}).values()))
        else:
            export = onnx_export_record() if rt.uses_onnx else {"format": "torch", "mode": "eager"}
            table = new_table(
                space,
                rt.record(),
                rt.libraries(),
                batch_size=batch_size,
                protocol=protocol,
                calibrate=calibrate,
                seed=seed,
                export=export,
            )
            if out is not None:
                table.save(out)
        units = table_units(space, batch_size) + [net_unit(space, space.arch(a), batch_size) for a in table.calibration_archs]
        log.info(
            "profiling %s on %s/%s: %d blocks + stem + head + %d subnets",
            space.name,
            rt.name,
            rt.device,
            len(units) - 2 - len(table.calibration_archs),
            len(table.calibration_archs),
        )
        timers = prepare_timers(rt, space, units, progress=progress)

        def checkpoint(done: dict) -> None:
            table.samples = done
            if out is not None:
                table.save(out)

        samples = run_protocol(
            timers, protocol, samples=table.samples, checkpoint=checkpoint, checkpoint_s=checkpoint_s, progress=progress
        )
    finish_table(table, space, samples)
    if out is not None:
        table.save(out)
    return table


__all__ = ["DEFAULT_CALIBRATION", "finish_table", "new_table", "prepare_timers", "profile_space", "run_protocol", "unit_models"]
