"""Untrusted files: a checkpoint carrying a pickle payload is refused, one line, never executed,
by every command and library loader that reads checkpoints; nothing else in the package
unpickles."""

from __future__ import annotations

import contextlib
import pickle
import re
from pathlib import Path

import pytest
import torch

from spos_hw.errors import ArtifactError
from tests.support.artifacts import ARCH, SPACE
from tests.support.artifacts import TINY_FLAGS as TINY
from tests.support.cli import as_seen, assert_user_error
from tests.support.files import evil_checkpoint, evil_pickle, tree_hashes

PACKAGE = Path(__file__).resolve().parents[2] / "spos_hw"


@pytest.fixture(params=["zip", "legacy-pickle"])
def evil(request, artifacts, tmp_path):
    """A malicious file in both formats ``torch.load`` reads, and the marker its payload would create."""
    marker = tmp_path / "PWNED"
    if request.param == "zip":
        path = evil_checkpoint(tmp_path / "evil.pt", marker, torch.load(artifacts.supernet, weights_only=True))
    else:
        path = evil_pickle(tmp_path / "evil.pt", marker)
    return path, marker


def test_the_payload_is_live(evil):
    """Proof the fixture is dangerous: an unsafe load runs the payload (so the tests below can fail)."""
    path, marker = evil
    # the legacy reader unpickles first, then finds no torch magic number
    with contextlib.suppress(RuntimeError):
        torch.load(path, weights_only=False)
    assert marker.exists()


def test_the_bare_pickle_payload_is_live(tmp_path):
    marker = tmp_path / "PWNED"
    pickle.loads(evil_pickle(tmp_path / "p.pkl", marker).read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("loader", ["io.load_checkpoint", "checkpoint.load_supernet", "checkpoint.load_subnet"])
def test_library_loaders_refuse(evil, loader):
    from spos_hw import io
    from spos_hw.nas import checkpoint

    path, marker = evil
    fn = {
        "io.load_checkpoint": io.load_checkpoint,
        "checkpoint.load_supernet": checkpoint.load_supernet,
        "checkpoint.load_subnet": checkpoint.load_subnet,
    }[loader]
    with pytest.raises(ArtifactError, match="refused, not executed") as exc:
        fn(path)
    assert "\n" not in str(exc.value)
    assert not marker.exists()


COMMANDS = {
    "train-supernet --resume": [
        "train-supernet",
        "--space",
        SPACE,
        "--data",
        "digits",
        "--steps",
        "1",
        *TINY,
        "--out",
        "{evil}",
        "--resume",
    ],
    "retrain --resume": [
        "retrain",
        ARCH,
        "--space",
        SPACE,
        "--data",
        "digits",
        "--steps",
        "1",
        *TINY,
        "--out",
        "{evil}",
        "--resume",
    ],
    "search --supernet": ["search", "--supernet", "{evil}", "--flops-m", "1", "--out", "{w}/s", "--no-progress"],
    "export --checkpoint": ["export", "--checkpoint", "{evil}", "--out", "{w}/n.onnx"],
    "rank-check": ["rank-check", "{evil}", "--out", "{w}/r", "--no-progress"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_refuse(run_cli, evil, command):
    path, marker = evil
    args = [a.format(evil=path, w=path.parent) for a in COMMANDS[command]]
    before = tree_hashes(path.parent)
    assert_user_error(as_seen(run_cli(*args)), "refused, not executed")
    assert not marker.exists(), "the payload ran"
    assert tree_hashes(path.parent) == before


def test_nothing_else_unpickles():
    """Every checkpoint read goes through ``io.load_checkpoint`` (weights_only); no pickle anywhere."""
    offenders = []
    for src in PACKAGE.rglob("*.py"):
        text = src.read_text()
        rel = src.relative_to(PACKAGE.parent)
        for m in re.finditer(r"torch\.load\((?P<args>[^)]*)\)", text):
            if str(rel) != "spos_hw/io.py" or "weights_only=True" not in m.group("args"):
                offenders.append(f"{rel}: {m.group(0)}")
        for pat in (
            r"^\s*import pickle",
            r"^\s*from pickle",
            r"pickle\.loads?\(",
            r"allow_pickle\s*=\s*True",
            r"import dill",
            r"joblib\.load",
            r"weights_only\s*=\s*False",
        ):
            offenders += [f"{rel}: {m.group(0).strip()}" for m in re.finditer(pat, text, re.M)]
    assert not offenders, offenders
