"""Real processes: the environment they run in, and killing one at a seeded random point."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict:
    """The environment of a child ``python -m spos_hw ...``: this checkout, one OpenMP thread, no torchrun."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    env.pop("WORLD_SIZE", None)
    return env


def checkpoint_step(path: Path) -> int:
    """The step of the checkpoint at ``path`` (-1 while there is none)."""
    from spos_hw.io import load_checkpoint

    return load_checkpoint(path)["step"] if path.is_file() else -1


def kill_during(cmd: list[str], ready, *, rng, env: dict | None = None, timeout: float = 240.0, max_delay: float = 0.3) -> None:
    """Run ``cmd``, and ``kill -9`` it at a seeded random point: once ``ready()`` holds (callers
    pick its threshold with ``rng``), after a further random delay of up to ``max_delay`` s, so
    the kill lands anywhere in the work that follows, checkpoint writes included. Fails if the
    process ended on its own first (it could not be killed mid-run)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and not ready():
                assert time.monotonic() < deadline, "timed out waiting for the point to kill at"
                time.sleep(0.05)
            time.sleep(float(rng.uniform(0.0, max_delay)))
            if proc.poll() is not None:
                err.seek(0)
                raise AssertionError(f"the run ended before it could be killed: {err.read().decode()[-800:]}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
