"""bench/device_check.sh: valid bash, and a clean skip (exit 0, JSON + markdown written) without CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "bench" / "device_check.sh"


def test_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_clean_skip_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the real checks")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(SCRIPT.parents[1])}
    res = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "dc")], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "dc" / "device_check.json").read_text())
    assert report["device"]["cuda"] is False
    assert [s["status"] for s in report["steps"]] == ["ok", "skipped"]
    assert "no CUDA device" in (tmp_path / "dc" / "device_check.md").read_text()
