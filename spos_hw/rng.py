"""numpy ``Generator`` state as plain JSON-able values (checkpoints, search states).

PCG64 states hold 128-bit integers; they are stored as ``{"int": "<decimal>"}`` so the state
survives JSON and weights-only checkpoint loading. No torch here.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _encode(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    return {"int": str(v)} if isinstance(v, int) and not isinstance(v, bool) else v


def _decode(v: Any) -> Any:
    if isinstance(v, dict):
        return int(v["int"]) if set(v) == {"int"} else {k: _decode(x) for k, x in v.items()}
    return v


def rng_state_to_json(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state with every integer as a string."""
    return _encode(rng.bit_generator.state)


def rng_state_from_json(rng: np.random.Generator, state: dict[str, Any]) -> None:
    """Put a state written by ``rng_state_to_json`` back into ``rng``."""
    rng.bit_generator.state = _decode(state)


__all__ = ["rng_state_from_json", "rng_state_to_json"]
