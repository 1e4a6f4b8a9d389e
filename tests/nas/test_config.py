"""Training configs: validation and the datasets' recipes."""

from __future__ import annotations

import pytest

from spos_hw.errors import ConfigError
from spos_hw.nas.config import SUPERNET_LR_SCALE, RetrainConfig, SupernetConfig, resolve

SPACE = "shufflenetv2-small:size=16"


def test_config_validation():
    with pytest.raises(ConfigError, match="steps or epochs"):
        SupernetConfig(space=SPACE, data="digits", steps=3, epochs=1.0)
    with pytest.raises(ConfigError, match="resume or --overwrite"):
        SupernetConfig(space=SPACE, data="digits", resume=True, overwrite=True)
    cfg = resolve(SupernetConfig(space=SPACE, data="fashion-mnist", batch_size=512), 54_000)
    assert cfg.steps == 10 * (54_000 // 512)
    # a supernet: twice the dataset's lr; a retrain: the dataset's recipe
    assert cfg.lr == pytest.approx(0.2 * 512 / 256 * SUPERNET_LR_SCALE) and cfg.weight_decay == pytest.approx(5e-5)
    fixed = resolve(RetrainConfig(space=SPACE, data="fashion-mnist", batch_size=512, arch="0"), 54_000)
    assert fixed.lr == pytest.approx(0.4) and fixed.weight_decay == pytest.approx(5e-5)
    given = resolve(SupernetConfig(space=SPACE, data="fashion-mnist", lr=0.05, weight_decay=1e-4), 54_000)
    assert (given.lr, given.weight_decay) == (0.05, 1e-4)
    assert cfg.augment is False and resolve(SupernetConfig(space=SPACE, data="digits"), 1000).augment is True
