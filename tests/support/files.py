"""Files a user can hand the tools: checkpoints written like `retrain` writes them, malicious
pickles, and hashes of a folder (to prove nothing was touched)."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path


class Payload:
    """Unpickling this creates ``marker``: the proof that a loader executed untrusted code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def evil_checkpoint(path: Path, marker: Path, like: dict) -> Path:
    """A real spos-hw checkpoint (``like``) with a pickle payload hidden among its values."""
    import torch

    torch.save({**like, "extra": Payload(marker)}, path)
    return path


def evil_pickle(path: Path, marker: Path) -> Path:
    """A bare (non-zip, legacy) pickle whose unpickling runs the payload."""
    path.write_bytes(pickle.dumps({"kind": "supernet", "model": Payload(marker)}, protocol=2))
    return path


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (the user's files, to prove nothing was touched)."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def write_subnet_checkpoint(path, space, arch, *, dataset="digits", seed=0):
    """A subnet checkpoint with the keys `retrain` writes (random weights, BN statistics from a batch)."""
    import torch

    from spos_hw.io import save_checkpoint
    from spos_hw.nas.checkpoint import FORMAT
    from spos_hw.nas.supernet import SubNet

    torch.manual_seed(seed)
    net = SubNet(space, arch)
    with torch.no_grad():
        net.train()(torch.randn(32, *space.input_shape))  # BN statistics and quantizer step sizes
    c, h, w = space.input_shape
    mean, std = [0.25] * c, [0.5] * c
    classes = [f"class{i}" for i in range(space.num_classes)]
    save_checkpoint(
        path,
        {
            "kind": "subnet",
            "format": FORMAT,
            "space": space.to_json(),
            "space_name": space.name,
            "fingerprint": space.fingerprint,
            "model": net.state_dict(),
            "arch": str(arch),
            "arch_json": arch.to_json(),
            "input": {"channels": c, "height": h, "width": w, "mean": mean, "std": std},
            "classes": classes,
            "data": {"dataset": dataset, "classes": classes, "mean": mean, "std": std},
            "test_accuracy": 0.5,
        },
    )
    return path
