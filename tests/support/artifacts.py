"""The artifacts many tests share, built once per session at tiny settings (digits,
``shufflenetv2-small`` at 8x8, two training steps, a one-round torch latency table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPACE = "shufflenetv2-small:size=8"
OTHER_SPACE = "shufflenetv2-small:size=16"  # same 20 blocks, so an arch parses in both: only the fingerprint differs
ARCH = ",".join(["0"] * 20)
ARCH2 = ",".join(["1"] * 20)
TRAIN = dict(data="digits", batch_size=16, threads=1, log_every=1)
TINY_FLAGS = ["--batch-size", "16", "--threads", "1", "--log-every", "1"]
"""``TRAIN`` as command-line flags."""


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


def build_artifacts(d: Path) -> Artifacts:
    import spos_hw
    from tests.support.spaces import make_tiny, space_file

    one = dict(runtime="torch", calibrate=2, warmup=0, rounds=1, repeats=1)
    spos_hw.train_supernet(space=SPACE, out=str(d / "supernet.pt"), steps=2, holdout=0.2, progress=False, **TRAIN)
    spos_hw.train_supernet(space=OTHER_SPACE, out=str(d / "other.pt"), steps=1, progress=False, **TRAIN)
    spos_hw.retrain(space=SPACE, arch=ARCH, out=str(d / "model.pt"), steps=2, progress=False, **TRAIN)
    spos_hw.profile(space=SPACE, out=str(d / "lut.json"), progress=False, **one)
    spos_hw.profile(space=str(space_file(d, make_tiny())), out=str(d / "other_lut.json"), progress=False, **one)
    partial = json.loads((d / "lut.json").read_text())
    partial.update(complete=False, samples={}, calibration=None)
    (d / "partial_lut.json").write_text(json.dumps(partial))
    spos_hw.search(
        supernet=str(d / "supernet.pt"),
        budgets={"flops": 1.0},
        population=4,
        generations=1,
        recal_images=32,
        holdout=40,
        seed=0,
        out=str(d / "search"),
        threads=1,
        progress=False,
    )
    return Artifacts(
        d,
        d / "supernet.pt",
        d / "model.pt",
        d / "lut.json",
        d / "partial_lut.json",
        d / "other.pt",
        d / "other_lut.json",
        d / "search",
    )
