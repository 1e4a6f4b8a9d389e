"""Boards without torch: a bundle of ONNX models + one runner script, and the import of its results.

``export_bundle`` writes ``DIR/models/*.onnx`` (every distinct block, the stem, the head and the
calibration subnets), ``DIR/manifest.json`` and ``DIR/run_latency.py``, which is
``spos_hw/protocol.py`` verbatim: it needs only onnxruntime and numpy and times with the very
protocol the profiler uses. On the board::

    python run_latency.py --out measurements.json      # --resume continues a killed run

``import_measurements`` turns that file into a normal table (same summaries, same calibration
fit as ``profile_space``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from spos_hw import protocol as protocol_module
from spos_hw.errors import ArtifactError, OutputError
from spos_hw.io import atomic_write_bytes, atomic_write_json, check_new_output, read_json
from spos_hw.latency.profile import DEFAULT_CALIBRATION, check_int, finish_table, new_table, onnx_export_record, unit_models
from spos_hw.latency.runtimes import library_versions
from spos_hw.latency.table import LatencyTable
from spos_hw.latency.units import net_unit, table_units
from spos_hw.nas.space import SearchSpace
from spos_hw.nas.spaces import space_from_record
from spos_hw.protocol import BUNDLE_SCHEMA, MEASUREMENTS_SCHEMA, SCHEMA_VERSION, Protocol, ProtocolError, default_clock

RUNNER = "run_latency.py"
MANIFEST = "manifest.json"


def export_bundle(
    space: SearchSpace,
    folder: str | os.PathLike,
    *,
    batch_size: int = 1,
    calibrate: int = DEFAULT_CALIBRATION,
    threads: int = 1,
    protocol: Protocol | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the bundle folder (which must not exist yet, unless ``overwrite``); return it."""
    check_int("batch size", batch_size, 1)
    check_int("calibrate", calibrate, 0)
    check_int("threads", threads, 1)
    protocol = protocol or Protocol(clock=default_clock("cpu", threads))
    protocol.check_for("cpu", threads)
    folder = Path(folder)
    if folder.exists():
        if not overwrite:
            raise OutputError(f"bundle folder {str(folder)!r} already exists; pass --overwrite to replace it")
        if not (folder / MANIFEST).is_file():
            raise OutputError(f"{str(folder)!r} exists and is not a bundle; refusing to replace it")
        shutil.rmtree(folder)
    check_new_output(folder, overwrite=True)  # the parent must exist and be writable
    header = new_table(
        space, {}, {}, batch_size=batch_size, protocol=protocol, calibrate=calibrate, seed=seed, export={}, machine={}
    )
    units = table_units(space, batch_size) + [net_unit(space, space.arch(a), batch_size) for a in header.calibration_archs]
    models = unit_models(space, units, progress=progress)
    (folder / "models").mkdir(parents=True)
    entries = []
    for i, unit in enumerate(units):
        data = models[unit.key].SerializeToString()
        name = f"models/{i:04d}_{unit.kind}.onnx"
        atomic_write_bytes(folder / name, data)
        entries.append(
            {
                "key": unit.key,
                "kind": unit.kind,
                "file": name,
                "input_shape": list(unit.input_shape),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    manifest = {
        "schema": BUNDLE_SCHEMA,
        "version": SCHEMA_VERSION,
        "space": header.space,
        "input_shape": header.input_shape,
        "batch_size": batch_size,
        "protocol": protocol.to_json(),
        "threads": threads,
        "seed": seed,
        "calibration_archs": header.calibration_archs,
        "export": onnx_export_record(),
        "exported_with": library_versions("torch", "onnx", "onnxscript"),
        "units": entries,
    }
    manifest["id"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    atomic_write_json(folder / MANIFEST, manifest)
    atomic_write_bytes(folder / RUNNER, Path(protocol_module.__file__).read_bytes())
    return folder


def import_measurements(
    path: str | os.PathLike,
    *,
    space: SearchSpace | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> LatencyTable:
    """A complete ``LatencyTable`` from a bundle runner's measurements file (checked against ``space``)."""
    if out is not None:
        check_new_output(out, overwrite=overwrite)
    where = f"measurements file {str(path)!r}"
    rec = read_json(path, "measurements file")
    if not isinstance(rec, dict) or rec.get("schema") != MEASUREMENTS_SCHEMA or rec.get("version") != SCHEMA_VERSION:
        raise ArtifactError(f"{where} is not a spos-hw bundle measurements file")
    if not rec.get("complete"):
        raise ArtifactError(f"{where} is incomplete; rerun the bundle's runner with --resume")
    manifest = rec.get("manifest") or {}
    try:
        recorded = space_from_record(manifest["space"]["spec"], manifest["space"]["fingerprint"], where)
        protocol = Protocol.from_json(manifest["protocol"])
    except (KeyError, TypeError, ProtocolError) as exc:
        raise ArtifactError(f"{where} has a malformed manifest: {exc}") from None
    if space is None:
        space = recorded
    else:
        probe = LatencyTable(
            space=manifest["space"],
            input_shape=manifest["input_shape"],
            batch_size=manifest["batch_size"],
            runtime={},
            protocol=protocol,
        )
        probe.check(space, what=where)
    samples = rec.get("samples") or {}
    keys = [u["key"] for u in manifest.get("units", [])]
    short = [k for k in keys if len(samples.get(k, [])) < protocol.rounds]
    if short:
        raise ArtifactError(
            f"{where} lacks measurements for {len(short)} models (first: {short[0]}); rerun the runner with --resume"
        )
    table = new_table(
        space,
        rec["runtime"],
        rec.get("libraries", {}),
        batch_size=int(manifest["batch_size"]),
        protocol=protocol,
        calibrate=0,
        seed=int(manifest.get("seed", 0)),
        export=manifest.get("export", {}),
        source="bundle",
        machine=rec.get("machine", {}),
    )
    table.calibration_archs = list(manifest.get("calibration_archs", []))
    finish_table(table, space, {k: samples[k] for k in keys})
    table.created = rec.get("date", table.created)
    if out is not None:
        table.save(out)
    return table


__all__ = ["MANIFEST", "RUNNER", "export_bundle", "import_measurements"]
