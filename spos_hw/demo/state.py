"""The demo's folder bookkeeping: which steps ran, on which inputs, with what result, for how long.

After a step, ``demo_state.json`` records the artifact's SHA-256, the inputs' hashes, the wall
time and the step's figures. A rerun skips a step whose artifact is unchanged, resumes a step
whose artifact is missing or partial (each long step checkpoints itself), and refuses a step
whose inputs changed after it ran, so stale results are never mixed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spos_hw.demo.config import DemoConfig, pick_data
from spos_hw.errors import ArtifactError, OutputError
from spos_hw.io import atomic_write_json, file_sha256, read_json

log = logging.getLogger("spos_hw.demo")

STATE = "demo_state.json"


class Workdir:
    """One demo folder: its settings, the steps it ran, their artifacts' hashes and wall times."""

    def __init__(self, config: DemoConfig, *, progress: bool = True) -> None:
        self.dir = Path(config.workdir)
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"work folder {str(self.dir)!r} is a file")
        if not (self.dir / STATE).is_file() and self.dir.is_dir() and any(self.dir.iterdir()):
            # before anything else is said (e.g. the dataset fallback's warning): the one line is this error
            raise OutputError(f"work folder {str(self.dir)!r} is not empty and holds no demo run; use another --workdir")
        self.budget, self.preset = config.budget, config.work
        self.data, self.threads, self.seed, self.progress = pick_data(config.data), config.threads, config.seed, progress
        self.space = config.space
        from spos_hw.nas.data import check_data
        from spos_hw.nas.spaces import get_space

        check_data(self.data, get_space(self.space))  # a bad --data fails now, not after profiling
        data_name = self.data if isinstance(self.data, str) else getattr(self.data, "recorded_name", "custom")
        settings = {
            "budget": self.budget,
            "data": data_name,
            "seed": self.seed,
            "space": self.space,
            "preset": dataclasses.asdict(self.preset),
        }
        self.config = json.loads(json.dumps(settings))  # as demo_state.json holds it (lists, not tuples)
        self.state: dict[str, Any] = {"kind": "spos-hw-demo", "config": self.config, "steps": {}}
        path = self.dir / STATE
        if path.is_file():
            old = read_json(path, what="demo state")
            if not isinstance(old, dict) or old.get("kind") != "spos-hw-demo":
                raise ArtifactError(f"{path} is not a demo state file")
            if old.get("config") != self.config:
                diff = sorted(k for k in self.config if old.get("config", {}).get(k) != self.config[k])
                raise OutputError(f"{self.dir} holds a demo run with other settings ({', '.join(diff)}); use another --workdir")
            self.state = old

    # ------------------------------------------------------------------ bookkeeping
    def path(self, name: str) -> Path:
        return self.dir / name

    def done(self, step: str, inputs: list[str]) -> dict | None:
        """The recorded result of ``step`` if its artifact is still the one recorded.

        A step whose inputs changed since it ran (another supernet, another table) is refused:
        its checkpoints no longer match, and redoing it silently would discard its work.
        """
        rec = self.state["steps"].get(step)
        if not rec:
            return None
        changed = [i for i in inputs if not self.path(i).is_file() or file_sha256(self.path(i)) != rec["inputs"].get(i)]
        if changed:
            raise OutputError(f"{', '.join(changed)} changed after the {step} step used it; start again in a new --workdir")
        art = self.path(rec["artifact"])
        if art.is_file() and file_sha256(art) == rec["sha256"]:
            return rec
        log.info("%s: %s changed or is missing, running the step again", step, art)
        return None

    def record(self, step: str, artifact: str, result: dict, seconds: float, inputs: list[str]) -> dict:
        rec = {
            "artifact": artifact,
            "sha256": file_sha256(self.path(artifact)),
            "inputs": {i: file_sha256(self.path(i)) for i in inputs},
            "wall_seconds": round(seconds, 1),
            "result": result,
        }
        self.state["steps"][step] = rec
        atomic_write_json(self.path(STATE), self.state)
        return rec

    def step(
        self, name: str, artifact: str, fn: Callable[[bool], dict], *, inputs: list[str] = (), partial: list[str] = ()
    ) -> dict:
        """Run ``fn(resume)`` unless ``name`` is done; ``resume`` is true when its checkpoint exists."""
        inputs = list(inputs)
        rec = self.done(name, inputs)
        if rec is not None:
            log.info("[%s] done before (%s), skipped", name, artifact)
            return rec
        resume = self.path(artifact).exists() or any(self.path(p).exists() for p in partial)
        log.info("[%s] %s", name, "resuming" if resume else "running")
        spent = self.state.setdefault("interrupted_s", {})
        spent[name] = spent.get(name, 0.0) + self.interrupted_seconds(name, [artifact, *partial])
        self.state.setdefault("attempts", {})[name] = time.time()  # when this attempt began, should it be killed
        atomic_write_json(self.path(STATE), self.state)
        t0 = time.perf_counter()
        result = fn(resume)
        self.state["attempts"].pop(name, None)
        return self.record(name, artifact, result, spent.pop(name) + time.perf_counter() - t0, inputs)

    def interrupted_seconds(self, step: str, files: list[str]) -> float:
        """Work an earlier, killed attempt at ``step`` did: from its start to its last checkpoint write.

        The state file records when each attempt began; the step's own files (checkpoints are written
        atomically as it goes) tell when it last made progress. Time after that was lost, not spent.
        """
        start = self.state.get("attempts", {}).get(step)
        if start is None:
            return 0.0
        done = [self.path(f).stat().st_mtime for f in files if self.path(f).exists()]
        done += [p.stat().st_mtime for f in files if self.path(f).is_dir() for p in self.path(f).rglob("*") if p.is_file()]
        return max(0.0, max(done, default=start) - start)


__all__ = ["STATE", "Workdir"]
