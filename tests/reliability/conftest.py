"""Artifacts the reliability tests share, built once per session at tiny settings (digits,
``shufflenetv2-small`` at 8x8, two training steps, a one-round torch latency table), and the
bad files a user can hand the CLI: corrupt, truncated, foreign and malicious ones."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest

SPACE = "shufflenetv2-small:size=8"
OTHER_SPACE = "shufflenetv2-small:size=16"  # same 20 blocks, so an arch parses in both: only the fingerprint differs
ARCH = ",".join(["0"] * 20)
ARCH2 = ",".join(["1"] * 20)
TRAIN = dict(data="digits", batch_size=16, threads=1, log_every=1)


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


@dataclass(frozen=True)
class Artifacts:
    dir: Path
    supernet: Path  # train-supernet checkpoint of SPACE
    model: Path  # retrain checkpoint of ARCH in SPACE
    lut: Path  # complete latency table of SPACE, batch 1
    partial_lut: Path  # the same table as an interrupted profile leaves it
    other_supernet: Path  # supernet checkpoint of OTHER_SPACE
    other_lut: Path  # latency table of another (tiny) space
    search: Path  # a finished search folder of `supernet`


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Artifacts:
    from spos_hw.latency.profile import profile_space
    from spos_hw.latency.protocol import Protocol
    from spos_hw.nas.search import search_supernet
    from spos_hw.nas.spaces import get_space
    from spos_hw.nas.train import RetrainConfig, SupernetConfig, retrain, train_supernet
    from tests.latency.conftest import make_tiny

    d = tmp_path_factory.mktemp("artifacts")
    one = Protocol(warmup=0, rounds=1, repeats=1, turn_warmup=0)
    train_supernet(SupernetConfig(space=SPACE, out=str(d / "supernet.pt"), steps=2, holdout=0.2, **TRAIN), progress=False)
    train_supernet(SupernetConfig(space=OTHER_SPACE, out=str(d / "other.pt"), steps=1, **TRAIN), progress=False)
    retrain(RetrainConfig(space=SPACE, arch=ARCH, out=str(d / "model.pt"), steps=2, **TRAIN), progress=False)
    profile_space(get_space(SPACE), runtime="torch", calibrate=2, protocol=one, out=d / "lut.json")
    profile_space(make_tiny(), runtime="torch", calibrate=2, protocol=one, out=d / "other_lut.json")
    partial = json.loads((d / "lut.json").read_text())
    partial.update(complete=False, samples={}, calibration=None)
    (d / "partial_lut.json").write_text(json.dumps(partial))
    search_supernet(supernet=d / "supernet.pt", budgets={"flops": 1.0}, options=dict(population=4, generations=1),
                    recal_images=32, holdout=40, seed=0, out=d / "search", threads=1, progress=False)  # fmt: skip
    return Artifacts(d, d / "supernet.pt", d / "model.pt", d / "lut.json", d / "partial_lut.json", d / "other.pt",
                     d / "other_lut.json", d / "search")  # fmt: skip


def tree_hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (the user's files, to prove nothing was touched)."""
    out = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out
