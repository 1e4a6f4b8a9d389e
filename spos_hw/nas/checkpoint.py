"""Training checkpoints: writing them, what they hold, and loading them back safely and verified.

A checkpoint is a dict of tensors and plain values written with ``spos_hw.io.save_checkpoint``
and read only with ``spos_hw.io.load_checkpoint`` (``weights_only=True``). Keys:

``kind`` ("supernet" | "subnet"), ``format``, ``space`` (spec JSON), ``space_name``,
``fingerprint``, ``config`` (the resolved run config), ``model`` (state dict), ``optimizer``,
``scheduler``, ``sampler`` (its RNG state, supernets), ``step``, ``total_steps``, ``epoch``,
``position`` (batch within the epoch), ``chunks`` (ranks x accumulation steps), ``curve``,
``data`` (dataset, classes, normalization mean/std, input shape, test origin, holdout split),
``elapsed_s``, ``versions``; supernets add ``sharing`` (``nas.sharing``; absent in older
checkpoints, which are ``independent``); subnets add ``arch``, ``arch_json``, ``test_accuracy``.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from spos_hw.errors import ArtifactError, ArtifactMismatch
from spos_hw.io import atomic_write_json, load_checkpoint, save_checkpoint
from spos_hw.nas.space import SearchSpace

FORMAT = 1

TRAINING_STATE = ("model", "optimizer", "scheduler", "scaler", "sampler")
"""Keys of the trainer's state that only the checkpoint holds (the summary JSON leaves them out)."""

LEGACY_DEFAULTS: dict[str, Any] = {"sharing": "independent"}
"""Config fields whose default changed after checkpoints without them were written: what those used."""

RESUME_FREE = frozenset({"out", "resume", "overwrite", "log_every", "ckpt_every", "device", "threads", "workers", "accum"})
"""Config fields a resumed run may change: they do not alter the training trajectory."""


def versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from spos_hw import __version__

    found = {
        "spos_hw": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
    }
    return {k: str(v) for k, v in found.items()} | {"python": platform.python_version()}  # TorchVersion is no plain str


def write_checkpoint(
    path: str | Path,
    summary_path: str | Path,
    *,
    kind: str,
    space: SearchSpace,
    config: dict[str, Any],
    total_steps: int,
    state: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write a checkpoint atomically (``kind``, space, resolved config, trainer ``state``, ``extra``)
    and its JSON summary (everything but the tensors and the space spec) beside it."""
    ckpt = {
        "kind": kind,
        "format": FORMAT,
        "space": space.to_json(),
        "space_name": space.name,
        "fingerprint": space.fingerprint,
        "config": config,
        "total_steps": total_steps,
        **state,
        **extra,
        "versions": versions(),
    }
    save_checkpoint(path, ckpt)
    atomic_write_json(summary_path, {k: v for k, v in ckpt.items() if k not in (*TRAINING_STATE, "space")})
    return ckpt


def space_of(ckpt: dict, path: str | Path = "checkpoint") -> SearchSpace:
    """The space a checkpoint was made for, rebuilt from its spec and checked against its fingerprint."""
    from spos_hw.nas.spaces import space_from_record

    return space_from_record(ckpt.get("space"), ckpt.get("fingerprint"), f"checkpoint {str(path)!r}")


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


def check_resumable(
    ckpt: dict, *, kind: str, space: SearchSpace, config: dict[str, Any], path: str | Path, defaults: dict[str, Any] | None = None
) -> None:
    """Refuse to resume a checkpoint of another kind, space or training config.

    An option the checkpoint does not record (it is older than the option) counts as its default.
    """
    check_kind_and_space(ckpt, kind=kind, space=space, path=path)
    old = {**(defaults or {}), **{k: v for k, v in LEGACY_DEFAULTS.items() if k in config}, **ckpt.get("config", {})}
    diffs = [
        f"{k}={old.get(k)!r} (now {config.get(k)!r})"
        for k in sorted(set(old) | set(config))
        if k not in RESUME_FREE and _norm(old.get(k)) != _norm(config.get(k))
    ]
    if diffs:
        raise ArtifactMismatch(
            f"cannot resume {str(path)!r}: it was trained with "
            + ", ".join(diffs[:4])
            + ("..." if len(diffs) > 4 else "")
            + "; use the same options, or a new --out"
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
    net = Supernet(space or rebuilt, sharing=sharing_of(ckpt, path))
    net.load_state_dict(ckpt["model"])
    return net, ckpt


def sharing_of(ckpt: dict, path: str | Path = "checkpoint") -> str:
    """The weight-sharing mode a supernet checkpoint was trained with (``independent`` if unrecorded)."""
    from spos_hw.nas.sharing import LEGACY_SHARING, SHARING_MODES

    mode = ckpt.get("sharing", LEGACY_SHARING)
    if mode not in SHARING_MODES:
        raise ArtifactError(
            f"checkpoint {str(path)!r} records weight sharing {mode!r}; this version knows {', '.join(SHARING_MODES)}"
        )
    return mode


def load_subnet(path: str | Path):
    """A retrained ``SubNet`` (BN affine, eval-ready after ``.eval()``) and its checkpoint dict."""
    from spos_hw.nas.supernet import SubNet

    ckpt = _load(path, "subnet")
    space = space_of(ckpt, path)
    net = SubNet(space, space.arch(ckpt["arch_json"]))
    net.load_state_dict(ckpt["model"])
    return net, ckpt


def data_for_checkpoint(ckpt: dict, space: SearchSpace, data=None):
    """The dataset and held-out split a supernet checkpoint was trained with (for search).

    ``data`` overrides the recorded dataset (an image folder that moved, or your own
    ``nas.data.Datasets``, which a checkpoint cannot hold); the split is rebuilt from the
    recorded seed and size and checked against the recorded train size.
    """
    from spos_hw.nas.data import BUILTIN, CUSTOM_PREFIX, load_data

    info = ckpt.get("data") or {}
    name = data or info.get("dataset")
    if not name:
        raise ArtifactError("checkpoint records no dataset; pass --data")
    if data in BUILTIN and info.get("dataset") not in (None, data):
        raise ArtifactMismatch(f"the supernet was trained on {info['dataset']!r}, not {data!r}; search it on its own dataset")
    if isinstance(name, str) and name.startswith(CUSTOM_PREFIX):
        raise ArtifactError(
            f"the supernet was trained on your own datasets ({name}); pass them again (data=Datasets(train, test))"
        )
    loaded = load_data(name, space)
    ho = info.get("holdout") or {"seed": 0, "size": 0}
    split = loaded.split(int(ho["size"]), int(ho["seed"])) if ho["size"] else loaded.split(0, 0)
    if "train_size" in ho and len(split.train) != ho["train_size"]:
        raise ArtifactError(
            f"dataset {name!r} no longer matches the checkpoint ({len(split.train)} training images, recorded {ho['train_size']})"
        )
    return loaded, split


__all__ = [
    "FORMAT",
    "TRAINING_STATE",
    "check_kind_and_space",
    "check_resumable",
    "data_for_checkpoint",
    "load_subnet",
    "load_supernet",
    "sharing_of",
    "space_of",
    "versions",
    "write_checkpoint",
]
