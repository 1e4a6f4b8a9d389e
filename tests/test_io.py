"""Atomic writes and safe checkpoint loading."""

from __future__ import annotations

import os

import pytest
import torch

from spos_hw.errors import ArtifactError, OutputError
from spos_hw.io import atomic_write_text, check_new_output, load_checkpoint, save_checkpoint


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_malicious_pickle_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"kind": "supernet", "x": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(ArtifactError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()


def test_checkpoint_round_trip_and_corruption(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"kind": "test", "w": torch.arange(3), "meta": {"a": [1, "b"]}})
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(3))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ArtifactError, match="cannot be loaded"):
        load_checkpoint(path)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    save_checkpoint(path, {"no": "kind"})
    with pytest.raises(ArtifactError, match="not a spos-hw checkpoint"):
        load_checkpoint(path)


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")

    def boom(tmp):
        raise RuntimeError("disk full")

    from spos_hw.io import atomic_write_with

    with pytest.raises(RuntimeError):
        atomic_write_with(path, boom)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_check_new_output(tmp_path):
    (tmp_path / "a").write_text("x")
    with pytest.raises(OutputError, match="already exists"):
        check_new_output(tmp_path / "a")
    assert check_new_output(tmp_path / "a", resume=True)
    with pytest.raises(OutputError, match="does not exist"):
        check_new_output(tmp_path / "nodir" / "a")
