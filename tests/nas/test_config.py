"""Training configs: validation and the datasets' recipes."""

from __future__ import annotations

import pytest

from spos_hw.errors import ConfigError
from spos_hw.nas.config import SupernetConfig, resolve

SPACE = "shufflenetv2-small:size=16"


def test_config_validation():
    with pytest.raises(ConfigError, match="steps or epochs"):
        SupernetConfig(space=SPACE, data="digits", steps=3, epochs=1.0)
    with pytest.raises(ConfigError, match="resume or --overwrite"):
        SupernetConfig(space=SPACE, data="digits", resume=True, overwrite=True)
    cfg = resolve(SupernetConfig(space=SPACE, data="fashion-mnist", batch_size=512), 54_000)
    assert cfg.lr == pytest.approx(0.4) and cfg.steps == 10 * (54_000 // 512) and cfg.weight_decay > 0
    assert cfg.augment is False and resolve(SupernetConfig(space=SPACE, data="digits"), 1000).augment is True
