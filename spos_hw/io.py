"""Atomic file writes and safe checkpoint loading, shared by every long job."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spos_hw.errors import ArtifactError, ConfigError, OutputError


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run ``write(tmp_path)`` on a temp file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {str(parent)!r} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot write in {str(parent)!r}: {exc.strerror}") from None
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Let a library write the file (``torch.save``, ``onnx.save``, matplotlib) atomically."""
    return _atomic(path, write)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON artifact; a missing or malformed file is an ``ArtifactError``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None


def check_new_output(path: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Refuse to clobber a user's file unless asked; make sure the folder exists and takes files.

    Writability is probed with a real (immediately removed) temp file: ``os.access`` says yes
    to root on read-only folders and to anyone on filesystems that refuse new files (sysfs, some
    mounts), and a long job should fail now, not when it writes its result.
    """
    if overwrite and resume:
        raise ConfigError("give --resume or --overwrite, not both")
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder {str(parent)!r} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".spos-hw-probe.", dir=parent)
    except OSError as exc:
        raise OutputError(f"output folder {str(parent)!r} is not writable ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    if path.exists() and not (overwrite or resume):
        raise OutputError(f"{str(path)!r} already exists; pass --resume to continue it or --overwrite to replace it")
    return path


def save_checkpoint(path: str | os.PathLike, obj: dict) -> Path:
    """``torch.save`` atomically. Only tensors and plain Python values go in, so it loads with weights_only."""
    import torch

    return atomic_write_with(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict:
    """Load a checkpoint with ``weights_only=True``: a pickle payload is refused, never executed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, or a refused pickle global
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it contains objects other than tensors and plain values (refused, not executed)"
        raise ArtifactError(f"{what} {str(path)!r} cannot be loaded: {first}") from None
    if not isinstance(obj, dict) or "kind" not in obj:
        raise ArtifactError(f"{what} {str(path)!r} is not a spos-hw checkpoint")
    return obj


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
