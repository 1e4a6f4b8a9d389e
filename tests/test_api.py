"""The public Python API: the README's examples run as written, configs and keywords are one path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import spos_hw
from spos_hw.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks() -> list[str]:
    """The ```python blocks of the README's "From Python" section."""
    text = README.read_text()
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_has_the_examples():
    blocks = readme_blocks()
    assert len(blocks) == 2 and "spos_hw.retrain" in blocks[0] and "spos_hw.Datasets" in blocks[1]


@pytest.mark.parametrize("index", [0, 1], ids=["pipeline", "own-datasets"])
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_blocks()[index], f"README.md block {index + 1}", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.split()
    assert len(printed) >= 2
    if index == 0:
        assert (tmp_path / "model.onnx").is_file() and 0.0 <= float(printed[1]) <= 1.0 and float(printed[2]) >= 0.99
    else:
        assert (tmp_path / "mine" / "result.json").is_file() and 0.0 <= float(printed[1]) <= 1.0


def test_config_object_or_keywords_not_both(tmp_path):
    cfg = spos_hw.SupernetConfig(space="shufflenetv2-small", data="digits", out=str(tmp_path / "s.pt"))
    with pytest.raises(ConfigError, match="not both"):
        spos_hw.train_supernet(cfg, steps=3)
    with pytest.raises(ConfigError, match="unknown SupernetConfig option"):
        spos_hw.train_supernet(space="shufflenetv2-small", data="digits", stepz=3)
    with pytest.raises(ConfigError, match="expected a SearchConfig"):
        spos_hw.search(cfg)


def test_import_is_cheap_and_names_are_documented():
    import subprocess
    import sys

    code = "import sys, spos_hw; assert 'torch' not in sys.modules; spos_hw.get_space('shufflenetv2-small'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in ("profile", "train_supernet", "search", "retrain", "export", "get_space", "Arch", "Datasets"):
        assert getattr(spos_hw, name).__doc__, name
    with pytest.raises(AttributeError):
        spos_hw.nope  # noqa: B018
