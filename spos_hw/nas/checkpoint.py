"""Training checkpoints: what they hold, and loading them back safely and verified.

A checkpoint is a dict of tensors and plain values written with ``spos_hw.io.save_checkpoint``
and read only with ``spos_hw.io.load_checkpoint`` (``weights_only=True``). Keys:

``kind`` ("supernet" | "subnet"), ``format``, ``space`` (spec JSON), ``space_name``,
``fingerprint``, ``config`` (the resolved run config), ``model`` (state dict), ``optimizer``,
``scheduler``, ``sampler`` (its RNG state, supernets), ``step``, ``total_steps``, ``epoch``,
``position`` (batch within the epoch), ``chunks`` (ranks x accumulation steps), ``curve``,
``data`` (dataset, classes, normalization mean/std, input shape, test origin, holdout split),
``elapsed_s``, ``versions``; subnets add ``arch``, ``arch_json``, ``test_accuracy``.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from spos_hw.errors import ArtifactError, ArtifactMismatch
from spos_hw.io import load_checkpoint
from spos_hw.nas.space import SearchSpace

FORMAT = 1

RESUME_FREE = frozenset({"out", "resume", "overwrite", "log_every", "ckpt_every", "device", "threads", "workers", "accum"})
"""Config fields a resumed run may change: they do not alter the training trajectory."""


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from spos_hw import __version__

    found = {"spos_hw": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__}
    return {k: str(v) for k, v in found.items()} | {"python": platform.python_version()}  # TorchVersion is no plain str


def space_of(ckpt: dict, path: str | Path = "checkpoint") -> SearchSpace:
    """The space a checkpoint was made for, rebuilt from its spec and checked against its fingerprint."""
    try:
        space = SearchSpace.from_json(ckpt["space"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"checkpoint {str(path)!r} has no usable space spec ({exc})") from None
    if space.fingerprint != ckpt.get("fingerprint"):
        raise ArtifactMismatch(
            f"checkpoint {str(path)!r} records space fingerprint {ckpt.get('fingerprint')} but its spec hashes to "
            f"{space.fingerprint} (made by another spos-hw version?)"
        )
    return space


def check_space(ckpt: dict, space: SearchSpace, path: str | Path) -> None:
    if ckpt.get("fingerprint") != space.fingerprint:
        raise ArtifactMismatch(
            f"checkpoint {str(path)!r} was made for space {ckpt.get('space_name')!r} ({ckpt.get('fingerprint')}), "
            f"not {space.name!r} ({space.fingerprint})"
        )


def check_kind_and_space(ckpt: dict, *, kind: str, space: SearchSpace, path: str | Path) -> None:
    """Refuse a checkpoint of another kind, format or space (cheap: before any data is loaded)."""
    if ckpt.get("kind") != kind:
        raise ArtifactMismatch(f"{str(path)!r} is a {ckpt.get('kind')} checkpoint, not a {kind} one")
    if ckpt.get("format") != FORMAT:
        raise ArtifactMismatch(f"{str(path)!r} has checkpoint format {ckpt.get('format')}; this version reads {FORMAT}")
    check_space(ckpt, space, path)


def check_resumable(ckpt: dict, *, kind: str, space: SearchSpace, config: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume a checkpoint of another kind, space or training config."""
    check_kind_and_space(ckpt, kind=kind, space=space, path=path)
    old = ckpt.get("config", {})
    diffs = [
        f"{k}={old.get(k)!r} (now {config.get(k)!r})"
        for k in sorted(set(old) | set(config))
        if k not in RESUME_FREE and _norm(old.get(k)) != _norm(config.get(k))
    ]
    if diffs:
        raise ArtifactMismatch(
            f"cannot resume {str(path)!r}: it was trained with " + ", ".join(diffs[:4])
            + ("..." if len(diffs) > 4 else "") + "; use the same options, or a new --out"
        )


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_norm(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _load(path: str | Path, kind: str) -> dict:
    ckpt = load_checkpoint(path, f"{kind} checkpoint")
    if ckpt.get("kind") != kind:
        raise ArtifactMismatch(f"{str(path)!r} is a {ckpt.get('kind')} checkpoint, expected a {kind} checkpoint")
    return ckpt


def load_supernet(path: str | Path, space: SearchSpace | None = None):
    """A trained ``Supernet`` and its checkpoint dict.

    Args:
        path: a ``spos-hw train-supernet`` checkpoint.
        space: when given, the checkpoint must have been made for it (same fingerprint).
    """
    from spos_hw.nas.supernet import Supernet

    ckpt = _load(path, "supernet")
    rebuilt = space_of(ckpt, path)
    if space is not None:
        check_space(ckpt, space, path)
    net = Supernet(space or rebuilt)
    net.load_state_dict(ckpt["model"])
    return net, ckpt


def load_subnet(path: str | Path):
    """A retrained ``SubNet`` (BN affine, eval-ready after ``.eval()``) and its checkpoint dict."""
    from spos_hw.nas.supernet import SubNet

    ckpt = _load(path, "subnet")
    space = space_of(ckpt, path)
    net = SubNet(space, space.arch(ckpt["arch_json"]))
    net.load_state_dict(ckpt["model"])
    return net, ckpt


__all__ = ["FORMAT", "check_kind_and_space", "check_resumable", "load_subnet", "load_supernet", "space_of", "versions"]
