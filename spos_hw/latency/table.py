"""``LatencyTable``: the JSON lookup table a profile produces (versioned schema), and its checks.

A table names what it was measured for (space name, full spec and fingerprint, input size,
batch size) and how (runtime and version, device, threads, library versions, protocol, date),
holds per-entry statistics keyed by block signature plus the fixed parts (stem, head), and the
calibration fitted on whole subnets. A partial table (``complete: false``) also holds the raw
samples of finished turns so ``--resume`` continues it. Torch-free.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from spos_hw.errors import ArtifactError, ArtifactMismatch
from spos_hw.io import atomic_write_json, read_json
from spos_hw.nas.space import SearchSpace
from spos_hw.protocol import Protocol, ProtocolError

log = logging.getLogger(__name__)

TABLE_SCHEMA = "spos-hw/latency-table"
TABLE_VERSION = 1


@dataclass
class LatencyTable:
    """A latency lookup table (see the module docstring). Times are in milliseconds."""

    space: dict[str, Any]
    """``name``, ``fingerprint`` and ``spec`` (``SearchSpace.to_json()``)."""
    input_shape: list[int]
    batch_size: int
    runtime: dict[str, Any]
    """``name``, ``version``, ``device``, ``device_name``, ``threads``, ``options``."""
    protocol: Protocol
    libraries: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    """How units were prepared: ``{"format": "onnx", "opset": 21}`` or ``{"format": "torch"}``."""
    created: str = ""
    source: str = "profile"
    """``profile`` (measured here) or ``bundle`` (imported from a board's measurements)."""
    seed: int = 0
    entries: dict[str, dict] = field(default_factory=dict)
    """Block signature -> statistics (``protocol.summarize``)."""
    fixed: dict[str, dict] = field(default_factory=dict)
    """``stem`` and ``head`` -> statistics."""
    calibration_archs: list[str] = field(default_factory=list)
    """The whole subnets measured for calibration (canonical strings), chosen before measuring."""
    calibration: dict[str, Any] | None = None
    complete: bool = False
    samples: dict[str, list[list[float]]] | None = None
    """Raw per-turn samples while the table is partial; dropped once it is complete."""

    # --- values
    def latency(self, stats: dict) -> float:
        """The protocol's statistic of one entry's statistics."""
        return float(stats[self.protocol.statistic])

    @property
    def space_name(self) -> str:
        return str(self.space.get("name"))

    def build_space(self) -> SearchSpace:
        """The space this table was measured for, rebuilt from the recorded spec."""
        from spos_hw.nas.spaces import space_from_record

        return space_from_record(self.space.get("spec"), self.space.get("fingerprint"), "latency table")

    # --- checks
    def check(self, space: SearchSpace, *, batch_size: int | None = None, what: str = "latency table") -> None:
        """Refuse (``ArtifactMismatch``) a table measured for another space, input size or batch size."""
        diffs = []
        if self.space_name != space.name:
            diffs.append(f"space {self.space_name!r}, not {space.name!r}")
        if list(self.input_shape) != list(space.input_shape):
            fmt = lambda s: "x".join(map(str, s))  # noqa: E731
            diffs.append(f"input size {fmt(self.input_shape)}, not {fmt(space.input_shape)}")
        if not diffs and self.space.get("fingerprint") != space.fingerprint:
            diffs.append(
                f"another spec of space {space.name!r} (fingerprint {self.space.get('fingerprint')}, expected {space.fingerprint})"
            )
        if batch_size is not None and self.batch_size != batch_size:
            diffs.append(f"batch size {self.batch_size}, not {batch_size}")
        if diffs:
            raise ArtifactMismatch(f"{what} was measured for " + "; ".join(diffs))

    # --- (de)serialization
    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["protocol"] = self.protocol.to_json()
        if self.samples is None:
            d.pop("samples")
        return {"schema": TABLE_SCHEMA, "version": TABLE_VERSION, **d}

    @staticmethod
    def from_json(d: Any, where: str = "latency table") -> LatencyTable:
        if not isinstance(d, dict) or d.get("schema") != TABLE_SCHEMA:
            raise ArtifactError(f"{where} is not a spos-hw latency table (no '{TABLE_SCHEMA}' schema)")
        if d.get("version") != TABLE_VERSION:
            raise ArtifactError(f"{where} has schema version {d.get('version')!r}; this spos-hw reads version {TABLE_VERSION}")
        body = {k: v for k, v in d.items() if k not in ("schema", "version")}
        names = {f.name for f in dataclasses.fields(LatencyTable)}
        missing = [
            f.name
            for f in dataclasses.fields(LatencyTable)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in body
        ]
        unknown = sorted(set(body) - names)
        if missing or unknown:
            raise ArtifactError(f"{where} is malformed: missing {missing}, unknown {unknown}")
        try:
            body["protocol"] = Protocol.from_json(body["protocol"])
        except ProtocolError as exc:
            raise ArtifactError(f"{where} is malformed: {exc}") from None
        if not isinstance(body.get("space"), dict) or "spec" not in body["space"]:
            raise ArtifactError(f"{where} is malformed: no space spec")
        return LatencyTable(**body)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_json())

    @staticmethod
    def load(path: str | os.PathLike, *, allow_partial: bool = False) -> LatencyTable:
        """Read a table; a partial one is refused unless ``allow_partial`` (resume)."""
        where = f"latency table {str(path)!r}"
        table = LatencyTable.from_json(read_json(path, "latency table"), where)
        if not table.complete and not allow_partial:
            raise ArtifactError(f"{where} is incomplete (the profile was interrupted); rerun spos-hw profile with --resume")
        return table


def load_table(path: str | os.PathLike, space: SearchSpace | None = None, *, batch_size: int | None = None) -> LatencyTable:
    """Load a complete table, checked against ``space`` and ``batch_size`` when given."""
    table = LatencyTable.load(path)
    if space is not None:
        table.check(space, batch_size=batch_size, what=f"latency table {str(path)!r}")
    return table


__all__ = ["TABLE_SCHEMA", "TABLE_VERSION", "LatencyTable", "load_table"]
