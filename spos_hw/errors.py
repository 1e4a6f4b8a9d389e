"""Error hierarchy. The CLI turns every ``SposHwError`` into one line and exit code 2."""

from __future__ import annotations


class SposHwError(Exception):
    """Base class of every error the user can cause and fix."""


class ArchError(SposHwError, ValueError):
    """An architecture string, JSON or batch that does not fit its space."""


class SpaceError(SposHwError, ValueError):
    """An unknown search space or a bad space option."""


class ArtifactError(SposHwError, ValueError):
    """A missing, corrupt or unreadable artifact (checkpoint, table, result)."""


class ArtifactMismatch(ArtifactError):
    """An artifact made for another space, input size, batch size or architecture."""


class ConfigError(SposHwError, ValueError):
    """A bad option value (a negative step count, incompatible flags ...)."""


class Infeasible(SposHwError, ValueError):
    """No architecture of the space meets the requested bounds."""


class DataError(SposHwError, ValueError):
    """A dataset that is missing, empty or unreadable."""


class OutputError(SposHwError, OSError):
    """An output path that cannot be written or would overwrite the user's file."""


class MissingDependency(SposHwError, ImportError):
    """An optional package (tensorrt, triton, onnxruntime-gpu ...) is not installed."""


class RuntimeUnavailable(SposHwError, RuntimeError):
    """A runtime or device that cannot be used here (no CUDA, unknown runtime ...)."""


class QuantError(SposHwError, ValueError):
    """A bad quantization setting: a bit width outside the allowed set, a non-positive scale ..."""


class VerificationError(SposHwError, RuntimeError):
    """An exported model that does not match its torch original within tolerance."""
