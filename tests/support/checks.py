"""Comparisons the tests repeat."""

from __future__ import annotations

import torch


def assert_states_equal(a: dict, b: dict) -> None:
    """Two state dicts with the same keys and bit-identical tensors."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
